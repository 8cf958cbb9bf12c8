"""A watch process that kills what a launcher's runtime leaves behind when the launcher is gone.

Ray (simulation backend) fate-shares its GCS and raylet with the driver, but its dashboard and
runtime-env agents, orphaned by a SIGKILLed driver, try to report the raylet's death to the dead GCS
and linger, ignoring SIGTERM. A launcher cannot clean up after its own SIGKILL, so `orphan_reaper()`
starts this module as a separate process (own session) that notes the launcher's descendants every
half second and, when the launcher's pipe closes (the launcher exited or was killed) or the launcher
says `done`, kills every noted process that is no longer the launcher's descendant: an orphan.

    with orphan_reaper():
        run_simulation(...)
"""
from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time

POLL_S = 0.5        # how often the launcher's descendants are noted
GRACE_S = 5.0       # SIGKILL, then wait this long for the orphans to go


def _descendants(pid: int, since: float) -> dict[int, float]:
    """{pid: create_time} of the launcher's descendants started after `since`; empty once it is gone."""
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return {}
    found = {}
    for child in children:
        try:
            created = child.create_time()
        except psutil.Error:
            continue
        if created >= since:
            found[child.pid] = created
    return found


def reap(noted: dict[int, float], launcher: int, since: float) -> int:
    """Kill the noted processes that still run (same pid and start time) but are no longer the
    launcher's descendants; returns how many were killed."""
    import psutil

    current = _descendants(launcher, since)
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


def watch(launcher: int, since: float) -> int:
    """Note the launcher's descendants until its pipe closes or says `done`, then reap the orphans."""
    noted: dict[int, float] = {}
    while True:
        noted.update(_descendants(launcher, since))
        readable, _, _ = select.select([sys.stdin], [], [], POLL_S)
        if readable:
            line = sys.stdin.readline()   # "" (EOF): the launcher is gone; "done": it finished
            if not line or line.strip() == "done":
                return reap(noted, launcher, since)


@contextlib.contextmanager
def orphan_reaper():
    """Run the body with a reaper watching this process (Linux and macOS; a no-op elsewhere)."""
    if sys.platform not in ("linux", "darwin"):
        yield
        return
    since = time.time() - 1.0   # create_time has a coarse clock: note what starts from now on
    # run as a script: it needs only the standard library and psutil, not fedicra on the path
    reaper = subprocess.Popen([sys.executable, os.path.abspath(__file__), str(os.getpid()), repr(since)],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True)
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
    watch(int(sys.argv[1]), float(sys.argv[2]))
