"""The on-disk site layout: `<root>/<site>/{train,test}/<case>.h5`, read and written with full validation.

Every problem raises `DataError` with one line `<file>: <problem>`, so a user can fix the exact file.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from fedicra.data.errors import DataError
from fedicra.data.manifest import FULL_LABEL, LABEL_KINDS, MANIFEST_FILE, Manifest

SPLITS = ("train", "test")
CHECKSUM_FILE = "checksums.sha256"
LABEL_KEYS = (FULL_LABEL,) + LABEL_KINDS
_COMPRESSION = {"compression": "gzip", "compression_opts": 4}


def site_dir(root: str | os.PathLike, manifest: Manifest, site: int | str) -> Path:
    return Path(root) / manifest.sites[manifest.site_index(site)].name


def list_cases(root: str | os.PathLike, manifest: Manifest, site: int | str, split: str) -> list[Path]:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    folder = site_dir(root, manifest, site) / split
    if not folder.is_dir():
        raise DataError(f"{folder}: missing folder")
    return sorted(folder.glob("*.h5"))


def read_case(path: str | os.PathLike, manifest: Manifest, keys: tuple[str, ...] | None = None,
              check_channels: bool = True) -> dict[str, np.ndarray]:
    """Read and validate one case. `keys=None` reads every dataset in the file.

    The image comes back as (C,H,W) float32 whatever its stored shape; label maps as (H,W) uint8.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing file")
    try:
        with h5py.File(path, "r") as f:
            present = tuple(f.keys())
            # extra datasets (other tools' annotations) are ignored, not rejected
            wanted = tuple(k for k in ("image",) + LABEL_KEYS if k in present) if keys is None else tuple(keys)
            for key in wanted:
                if key not in present:
                    raise DataError(f"{path}: missing dataset {key!r} (has {', '.join(present) or 'nothing'})")
            arrays = {key: f[key][()] for key in wanted}
    except DataError:
        raise
    except Exception as err:  # h5py raises OSError, KeyError, RuntimeError, ... on broken files
        raise DataError(f"{path}: cannot read HDF5 file (truncated or not HDF5): {_first_line(err)}") from None
    return validate_case(arrays, path, manifest, check_channels)


def validate_case(arrays: dict[str, np.ndarray], path: Path, manifest: Manifest,
                  check_channels: bool = True) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    hw = None
    if "image" in arrays:
        image = np.asarray(arrays["image"])
        if image.dtype != np.float32:
            raise DataError(f"{path}: 'image' has dtype {image.dtype}, expected float32")
        if image.ndim == 2:
            image = image[None]
        elif image.ndim != 3:
            raise DataError(f"{path}: 'image' has {image.ndim} dimensions, expected (H,W) or (C,H,W)")
        if check_channels and image.shape[0] != manifest.in_channels:
            raise DataError(f"{path}: image has {image.shape[0]} channel(s), "
                            f"the dataset expects {manifest.in_channels}")
        hw = image.shape[1:]
        if hw != (manifest.img_size, manifest.img_size):
            raise DataError(f"{path}: image is {hw[0]}x{hw[1]}, the dataset img_size is {manifest.img_size}")
        if not np.isfinite(image).all():
            raise DataError(f"{path}: image has NaN or Inf values")
        lo, hi = float(image.min()), float(image.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(f"{path}: image values outside [0, 1] (min {lo:.4g}, max {hi:.4g})")
        out["image"] = image
    for key in LABEL_KEYS:
        if key not in arrays:
            continue
        label = np.asarray(arrays[key])
        if label.dtype != np.uint8:
            raise DataError(f"{path}: {key!r} has dtype {label.dtype}, expected uint8")
        if label.ndim != 2:
            raise DataError(f"{path}: {key!r} has {label.ndim} dimensions, expected (H,W)")
        if hw is not None and label.shape != hw:
            raise DataError(f"{path}: {key!r} shape {label.shape} does not match image shape {hw}")
        # full masks use classes 0..C-1; sparse maps also use C (= unlabeled)
        top = manifest.num_classes - 1 if key == FULL_LABEL else manifest.num_classes
        if label.size and int(label.max()) > top:
            raise DataError(f"{path}: {key!r} has value {int(label.max())}, expected values in 0..{top}")
        out[key] = label
    return out


def write_case(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write one case atomically with byte-reproducible HDF5 (no timestamps, fixed compression)."""
    import h5py

    from fedicra.atomic import atomic_path

    with atomic_path(path) as tmp, h5py.File(tmp, "w", track_order=False) as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value, track_times=False, **_COMPRESSION)


# --- checksums ------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _checksummed_files(root: Path) -> list[Path]:
    files = [p for p in root.rglob("*.h5") if not p.name.startswith(".")]
    if (root / MANIFEST_FILE).is_file():
        files.append(root / MANIFEST_FILE)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def write_checksums(root: str | os.PathLike) -> Path:
    """`sha256sum`-compatible list of every case file and the manifest."""
    root = Path(root)
    lines = [f"{_sha256(p)}  {p.relative_to(root).as_posix()}\n" for p in _checksummed_files(root)]
    from fedicra.atomic import atomic_write

    path = root / CHECKSUM_FILE
    atomic_write(path, "".join(lines))
    return path


def verify_checksums(root: str | os.PathLike) -> int:
    """Compare files with checksums.sha256 (if present); returns how many files were verified."""
    root = Path(root)
    listing = root / CHECKSUM_FILE
    if not listing.is_file():
        return 0
    expected: dict[str, str] = {}
    for number, line in enumerate(listing.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise DataError(f"{listing}: line {number} is not '<sha256>  <path>'")
        expected[name.strip()] = digest
    for name, digest in expected.items():
        path = root / name
        if not path.is_file():
            raise DataError(f"{path}: listed in {CHECKSUM_FILE} but missing")
        if _sha256(path) != digest:
            raise DataError(f"{path}: checksum mismatch with {CHECKSUM_FILE} (file changed after it was written)")
    for path in _checksummed_files(root):
        if path.relative_to(root).as_posix() not in expected:
            raise DataError(f"{path}: not listed in {CHECKSUM_FILE}")
    return len(expected)


# --- whole-dataset check --------------------------------------------------------------------
def check_dataset(root: str | os.PathLike, manifest: Manifest, verify: bool = True):
    """Validate every file of every site; return a per-site summary (pandas DataFrame).

    Raises DataError at the first problem. Sparse label kinds are optional per file (upstream ODOC has
    no `box`), except the site's default kind, which every training case must have.
    """
    import pandas as pd

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder does not exist")
    rows, channels_by_site = [], {}
    for index, site in enumerate(manifest.sites):
        folder = root / site.name
        if not folder.is_dir():
            raise DataError(f"{folder}: missing site folder")
        counts, kinds_seen, fg, labelled, channels = {}, None, [], [], set()
        for split in SPLITS:
            cases = list_cases(root, manifest, index, split)
            if not cases:
                what = "training" if split == "train" else "test"
                raise DataError(f"{folder / split}: site {site.name} has no {what} cases")
            counts[split] = len(cases)
            required = ("image", FULL_LABEL) + ((site.label,) if split == "train" and site.label != FULL_LABEL else ())
            for case in cases:
                arrays = read_case(case, manifest, keys=None, check_channels=False)
                for key in required:
                    if key not in arrays:
                        raise DataError(f"{case}: missing dataset {key!r}")
                if split == "train":
                    present = {k for k in LABEL_KINDS if k in arrays}
                    kinds_seen = present if kinds_seen is None else kinds_seen & present
                    if site.label != FULL_LABEL:
                        labelled.append(float(np.mean(arrays[site.label] != manifest.unlabeled)))
                channels.add(arrays["image"].shape[0])
                if len(channels) > 1:
                    raise DataError(f"{case}: image has {arrays['image'].shape[0]} channel(s), other cases of site "
                                    f"{site.name} have {min(channels - {arrays['image'].shape[0]})}")
                mask = arrays[FULL_LABEL]
                fg.append([float(np.isin(mask, classes).mean()) for classes in manifest.structures.values()])
        channels_by_site[site.name] = channels.pop()
        fg_mean = np.mean(fg, axis=0)
        row = {
            "site": index,
            "name": site.name,
            "label": site.label,
            "train": counts["train"],
            "test": counts["test"],
            "size": f"{manifest.img_size}x{manifest.img_size}",
            "channels": channels_by_site[site.name],
            "label_kinds": ",".join(k for k in LABEL_KINDS if k in kinds_seen),
        }
        row.update({f"fg_{name}": round(float(v), 4) for name, v in zip(manifest.structures, fg_mean)})
        row["labelled"] = round(float(np.mean(labelled)), 4) if labelled else 1.0
        rows.append(row)
    if len(set(channels_by_site.values())) > 1:
        detail = ", ".join(f"{k}={v}" for k, v in channels_by_site.items())
        raise DataError(f"{root}: channel counts differ across sites ({detail})")
    found = next(iter(channels_by_site.values()))
    if found != manifest.in_channels:
        raise DataError(f"{root}: images have {found} channel(s), but the manifest ({manifest.task}) expects "
                        f"{manifest.in_channels}")
    if verify:
        verify_checksums(root)
    return pd.DataFrame(rows)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
