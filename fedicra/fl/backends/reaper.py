"""A watch process that kills what a launcher's runtime leaves behind when the launcher is gone.

Ray (simulation backend) fate-shares its GCS and raylet with the driver, but its dashboard and
runtime-env agents, orphaned by a SIGKILLed driver, try to report the raylet's death to the dead GCS
and linger, ignoring SIGTERM. A launcher cannot clean up after its own SIGKILL, so `orphan_reaper()`
starts this module as a separate process (own session) that takes a snapshot of the launcher's
descendants, says `ready` (the body starts only then, so nothing it starts is missed), notes every new
descendant every half second and, when the launcher's pipe closes (the launcher exited or was killed) or
the launcher says `done`, kills every noted process that is no longer the launcher's descendant: an orphan.
Processes are told apart by psutil's process identity (pid and the start time since boot), never by
`create_time()`: that is the boot time read now plus the start time, so it moves when the wall clock is
stepped (a VM's clock sync), and a noted process would then look like a new one and be spared.

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


def _descendants(pid: int) -> set:
    """The launcher's descendants as psutil processes (equal when pid and start time since boot are);
    empty once it is gone."""
    import psutil

    try:
        return set(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return set()


def reap(noted: set, launcher: int) -> int:
    """Kill the noted processes that still run but are no longer the launcher's descendants; returns
    how many were killed."""
    import psutil

    orphans = []
    for proc in noted - _descendants(launcher):
        if proc.pid == os.getpid():   # the reaper is an orphan too once the launcher is gone
            continue
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:   # is_running: not a reused pid
                proc.kill()
                orphans.append(proc)
        except psutil.Error:
            pass
    psutil.wait_procs(orphans, timeout=GRACE_S)
    return len(orphans)


def watch(launcher: int) -> int:
    """Note the launcher's new descendants until its pipe closes or says `done`, then reap the orphans."""
    before = _descendants(launcher)   # what ran before the body (and this reaper) is not ours
    print("ready", flush=True)
    noted: set = set()
    while True:
        noted |= _descendants(launcher) - before
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
