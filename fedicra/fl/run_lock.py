"""One writer per run directory: an exclusive `flock` on `<run_dir>/.lock`, held while a run writes there.

The kernel drops the lock when the holder dies (even by SIGKILL), so a lock never outlives its run and
a killed run can be resumed at once; a second run on the same folder fails in one line instead of
mixing two configurations in one record.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from fedicra.errors import UserError

LOCK_FILE = ".lock"


@contextlib.contextmanager
def locked_run_dir(run_dir: str | os.PathLike):
    """Create `run_dir` if needed and hold its lock for the duration of the block."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: run directory path exists and is not a folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{run_dir}: another fedicra run is writing this run directory; wait for it "
                            "or use another --out") from None
        yield run_dir
    finally:
        os.close(fd)   # closing releases the lock
