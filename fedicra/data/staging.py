"""Write a whole dataset folder atomically: build it in a hidden sibling, rename it into place at the end.

A failed or interrupted generator or importer therefore leaves no half-written dataset behind.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from fedicra.data.errors import DataError


def check_target(out: Path, force: bool) -> None:
    occupied = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if occupied and not force:
        raise DataError(f"{out}: output folder exists and is not empty (use --force to replace it)")
    # --force replaces a dataset, never an arbitrary folder a typo pointed at
    if occupied and not (out / "dataset.json").is_file():
        raise DataError(f"{out}: --force replaces only a dataset folder (with dataset.json); this folder is not one")
    if out.parent.exists() and not out.parent.is_dir():
        raise DataError(f"{out.parent}: is not a folder")


class staging_folder:
    """Context manager: a temporary sibling folder that replaces `out` only if the block succeeds."""

    def __init__(self, out: Path, force: bool):
        self.out, self.force = out, force
        self.tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")

    def __enter__(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        return False
