"""Datasets shipped inside the package (small, resized copies of real data with their licence notice).

`faz-octa-mini`: 32 OCTA images with FAZ masks at 128 px (CC BY 4.0, see faz_octa_mini/NOTICE.md),
so a fresh clone's default grid includes real data. Each is a folder pair that `fedicra data import`
reads like any other PNG folders.
"""
from __future__ import annotations

from pathlib import Path

from fedicra.errors import UserError

_HERE = Path(__file__).resolve().parent
BUILTIN = {"faz-octa-mini": _HERE / "faz_octa_mini"}


def builtin_folders(name: str) -> tuple[Path, Path]:
    """(images folder, masks folder) of a shipped dataset."""
    if name not in BUILTIN:
        raise UserError(f"builtin dataset {name!r}: unknown (known: {', '.join(sorted(BUILTIN))})")
    root = BUILTIN[name]
    return root / "images", root / "masks"
