"""A watch process that kills what a launcher's runtime leaves behind when the launcher is gone.

Ray (simulation backend) fate-shares its GCS and raylet with the driver, but its dashboard and
runtime-env agents, orphaned by a SIGKILLed driver, try to report the raylet's death to the dead GCS
and linger, ignoring SIGTERM. A launcher cannot clean up after its own SIGKILL, so `orphan_reaper()`
starts this module as a separate process (own session) that takes a snapshot of the launcher's
descendants, says `ready` (the body starts only then, so nothing it starts is missed), notes every new
descendant every half second and, when the launcher's pipe closes (the launcher exited or was killed) or
the launcher says `done`, kills every noted process that is no longer the launcher's descendant: an orphan.
Processes are told apart by pid and start time, never by comparing start times with the wall clock
(psutil's start times can be a second off it).

    with orphan_reaper():
        run_simulation(...)
"""
from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys

POLL_S = 0.5        # how often the launcher's descendants are noted
GRACE_S = 5.0       # SIGKILL, then wait this long for the orphans to go


def _descendants(pid: int) -> dict[int, float]:
    """{pid: create_time} of the launcher's descendants; empty once it is gone."""
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return {}
    found = {}
    for child in children:
        with contextlib.suppress(psutil.Error):
            found[child.pid] = child.create_time()
    return found


def reap(noted: dict[int, float], launcher: int) -> int:
    """Kill the noted processes that still run (same pid and start time) but are no longer the
    launcher's descendants; returns how many were killed."""
    import psutil

    current = _descendants(launcher)
    orphans = []
    for pid, created in noted.items():
        if pid in current or pid == os.getpid():   # the reaper is an orphan too once the launcher is gone
            continue
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                proc.kill()
                orphans.append(proc)
        except psutil.Error:
            pass
    psutil.wait_procs(orphans, timeout=GRACE_S)
    return len(orphans)


def watch(launcher: int) -> int:
    """Note the launcher's new descendants until its pipe closes or says `done`, then reap the orphans."""
    before = set(_descendants(launcher).items())   # what ran before the body (and this reaper) is not ours
    print("ready", flush=True)
    noted: dict[int, float] = {}
    while True:
        noted.update(item for item in _descendants(launcher).items() if item not in before)
        readable, _, _ = select.select([sys.stdin], [], [], POLL_S)
        if readable:
            line = sys.stdin.readline()   # "" (EOF): the launcher is gone; "done": it finished
            if not line or line.strip() == "done":
                return reap(noted, launcher)


@contextlib.contextmanager
def orphan_reaper():
    """Run the body with a reaper watching this process (Linux and macOS; a no-op elsewhere)."""
    if sys.platform not in ("linux", "darwin"):
        yield
        return
    # run as a script: it needs only the standard library and psutil, not fedicra on the path
    reaper = subprocess.Popen([sys.executable, os.path.abspath(__file__), str(os.getpid())],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
    reaper.stdout.readline()   # "ready" ("" if it died: the body runs unwatched rather than not at all)
    reaper.stdout.close()
    try:
        yield
    finally:
        try:
            reaper.stdin.write(b"done\n")
            reaper.stdin.close()
            reaper.wait(timeout=GRACE_S + 5 * POLL_S + 10)
        except (OSError, subprocess.TimeoutExpired):
            reaper.kill()


if __name__ == "__main__":
    watch(int(sys.argv[1]))
