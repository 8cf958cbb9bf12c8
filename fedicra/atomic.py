"""Atomic files: every output is written to a temporary name beside it and renamed into place, so a
reader (or a Snakemake rule) never sees half a file, and a killed writer leaves at most a temporary
that `remove_stale_temporaries` recognises by its name."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def _file_mode() -> int:
    # mkstemp creates files 0600; a finished output follows the umask like any file `open` creates.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds.

    `suffix` goes before the temporary marker for writers that choose the format by extension
    (`np.savez` appends `.npz`, matplotlib reads the suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{TEMP_SUFFIX}{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and TEMP_SUFFIX in path.name[1:]


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete temporaries a killed writer left in `folder` (and below); call it only while holding the
    folder's lock, when no writer of ours can be active there. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.rglob(".*") if p.is_file() and is_temporary(p)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
