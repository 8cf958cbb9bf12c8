"""Atomic file writers for report outputs: write a temporary file in the same folder, then `os.replace`.

A reader (or Snakemake) never sees a half-written table, figure or report.
"""
from __future__ import annotations

from pathlib import Path

from fedicra.atomic import atomic_path, atomic_write


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, text.encode("utf-8"))


def atomic_write_csv(path: Path, frame) -> None:
    atomic_write_text(path, frame.to_csv(index=False))


def atomic_savefig(fig, path: Path) -> None:
    """Save a matplotlib figure; the format comes from the final suffix (png, pdf)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."), bbox_inches="tight", dpi=150)
