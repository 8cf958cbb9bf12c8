"""Turn folders of PNG images and masks into the site layout.

Two sources: flat image and mask folders whose files are grouped into sites by file-name patterns
(`import_pngs`), or a tree with one folder per site and, optionally, its own train/test split
(`import_tree`). Cases are split train/test with a seed unless the tree defines the split, resized
(masks with nearest neighbour), min-max normalised to [0,1] like upstream (reference 2.3), and the
training cases get generated sparse labels. See docs/data.md for the mask colour rules.
"""
from __future__ import annotations

import fnmatch
import os
import re
import shutil
from pathlib import Path

import numpy as np

from fedicra.data.errors import DataError
from fedicra.data.layout import write_case, write_checksums
from fedicra.data.manifest import LABEL_KINDS, Manifest, check_label_kind, get_task
from fedicra.data.sparse import make_sparse_labels
from fedicra.data.staging import check_target, staging_folder

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MAX_SOURCE_PIXELS = 8192 * 8192   # larger sources are refused before decoding (memory), with one line
ATTRIBUTION_GLOBS = ("NOTICE*", "LICENSE*", "LICENCE*")


# --- option parsing ---------------------------------------------------------------------------
def parse_site_patterns(specs: list[str] | None) -> list[tuple[str, str]]:
    """`GLOB=SITE` pairs, in order (the first matching pattern wins)."""
    if not specs:
        return [("*", "Domain1")]
    pairs = []
    for spec in specs:
        glob, sep, site = spec.rpartition("=")
        if not sep or not glob or not site:
            raise DataError(f"--site-pattern {spec!r}: expected GLOB=SITE, e.g. 'deep_*=deep'")
        pairs.append((glob, site))
    return pairs


def parse_site_labels(specs: list[str] | None) -> dict[str, str]:
    labels = {}
    for spec in specs or []:
        site, sep, kind = spec.partition("=")
        if not sep:
            raise DataError(f"--site-label {spec!r}: expected SITE=KIND, e.g. 'deep=scribble'")
        labels[site] = check_label_kind(kind, f"--site-label {spec!r}")
    return labels


def parse_mask_colors(specs: list[str] | None, num_classes: int) -> dict[tuple[int, ...], int] | None:
    """`R,G,B=CLASS` (colour masks) or `V=CLASS` (grey masks) pairs."""
    if not specs:
        return None
    colors = {}
    for spec in specs:
        value, sep, cls = spec.partition("=")
        try:
            key = tuple(int(v) for v in value.split(","))
            cls_index = int(cls)
        except ValueError:
            key, cls_index = (), -1
        if not sep or len(key) not in (1, 3) or not all(0 <= v <= 255 for v in key):
            raise DataError(f"--mask-colors {spec!r}: expected R,G,B=CLASS or V=CLASS with values 0-255")
        if not 0 <= cls_index < num_classes:
            raise DataError(f"--mask-colors {spec!r}: class must be in 0..{num_classes - 1}")
        colors[key] = cls_index
    if len({len(k) for k in colors}) > 1:
        raise DataError("--mask-colors: mix of grey (V) and colour (R,G,B) entries")
    return colors


# --- reading one pair -------------------------------------------------------------------------
def _pixel_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding; refuses an oversized image."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: cannot read image: {' '.join(str(err).split())[:200]}") from None
    if width * height > MAX_SOURCE_PIXELS:
        raise DataError(f"{path}: image is {width}x{height} pixels; at most {MAX_SOURCE_PIXELS} pixels "
                        "(8192x8192) are accepted")
    return width, height


def _open(path: Path) -> np.ndarray:
    from PIL import Image

    _pixel_size(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("P", "LA", "PA", "RGBA", "CMYK", "YCbCr", "HSV", "1"):
                img = img.convert("RGB" if img.mode not in ("LA", "1") else "L")
            return np.asarray(img)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read image: {err}") from None


def _resize(channel: np.ndarray, size: int, nearest: bool) -> np.ndarray:
    from PIL import Image

    if nearest:
        return np.asarray(Image.fromarray(channel.astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST))
    img = Image.fromarray(channel.astype(np.float32))  # mode F
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def load_image(path: Path, in_channels: int, size: int) -> np.ndarray:
    """(H,W) for one channel (channel 0 of an RGB file, as upstream), (3,H,W) for three; in [0,1]."""
    arr = _open(path).astype(np.float32)
    if in_channels == 1:
        channels = [arr if arr.ndim == 2 else arr[..., 0]]
    elif arr.ndim == 3 and arr.shape[-1] >= in_channels:
        channels = [arr[..., c] for c in range(in_channels)]
    else:
        raise DataError(f"{path}: grey image, but the task needs {in_channels} channels")
    image = np.stack([_resize(c, size, nearest=False) for c in channels])
    lo, hi = float(image.min()), float(image.max())
    image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    return image[0] if in_channels == 1 else image


def load_mask(path: Path, num_classes: int, size: int, colors: dict[tuple[int, ...], int] | None) -> np.ndarray:
    arr = _open(path)
    if arr.ndim == 3:
        arr = arr[..., :3]
        if (arr == arr[..., :1]).all() and (colors is None or len(next(iter(colors))) == 1):
            arr = arr[..., 0]  # grey stored as RGB
    if colors is not None:
        classes = np.full(arr.shape[:2], -1, dtype=np.int16)
        width = len(next(iter(colors)))
        if (arr.ndim == 3) != (width == 3):
            kind = "a colour" if arr.ndim == 3 else "a grey"
            raise DataError(f"{path}: {kind} mask, but --mask-colors gives {'R,G,B' if width == 3 else 'grey'} values")
        for key, cls in colors.items():
            hit = (arr == np.array(key)).all(axis=-1) if width == 3 else arr == key[0]
            classes[hit] = cls
        if (classes < 0).any():
            y, x = np.argwhere(classes < 0)[0]
            value = tuple(int(v) for v in np.atleast_1d(arr[y, x]))
            raise DataError(f"{path}: mask value {value} at pixel ({y}, {x}) is not listed in --mask-colors")
    else:
        # no colour map: index masks as they are; for two classes any non-black pixel is foreground
        flat = arr.max(axis=-1) if arr.ndim == 3 else arr
        if arr.ndim == 2 and int(arr.max()) < num_classes:
            classes = arr
        elif num_classes == 2:
            classes = (flat > 0).astype(np.uint8)
        else:
            raise DataError(f"{path}: mask values are not class indices 0..{num_classes - 1}; give --mask-colors")
    return _resize(classes.astype(np.uint8), size, nearest=True).astype(np.uint8)


# --- the import -------------------------------------------------------------------------------
def _find_mask(image: Path, masks_dir: Path) -> Path:
    for suffix in IMAGE_SUFFIXES:
        for candidate in (masks_dir / (image.stem + suffix), masks_dir / (image.stem + suffix.upper())):
            if candidate.is_file():
                return candidate
    raise DataError(f"{image}: no mask with the same name in {masks_dir}")


def group_by_site(images: list[Path], patterns: list[tuple[str, str]]) -> dict[str, list[Path]]:
    sites: dict[str, list[Path]] = {site: [] for _, site in patterns}
    for path in images:
        site = next((s for glob, s in patterns if fnmatch.fnmatch(path.name, glob)), None)
        if site is None:
            raise DataError(f"{path}: matches no --site-pattern ({', '.join(g for g, _ in patterns)})")
        sites[site].append(path)
    for glob, site in patterns:
        if not sites[site]:
            raise DataError(f"--site-pattern '{glob}={site}': no image matches")
    return sites


def split_cases(paths: list[Path], test_fraction: float, seed: int, site: int) -> tuple[list[Path], list[Path]]:
    n = len(paths)
    if n < 2:
        raise DataError(f"{paths[0]}: its site has only 1 image; a train/test split needs at least 2")
    n_test = min(n - 1, max(1, round(test_fraction * n)))
    order = np.random.default_rng([seed, site]).permutation(n)
    test = set(order[:n_test].tolist())
    return [p for i, p in enumerate(paths) if i not in test], [p for i, p in enumerate(paths) if i in test]


def _check_common(size: int, test_fraction: float) -> None:
    if size < 16:
        raise DataError(f"--size must be at least 16, got {size}")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"--test-fraction must be between 0 and 1 (exclusive), got {test_fraction}")


def _image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    stems = [p.stem for p in files]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise DataError(f"{folder}: two images named {dup!r} (different extensions)")
    return files


# One training or test case to write: (image file, mask file, index of the case in its site's sparse-label
# stream). The index keeps the sparse labels of a case independent of how the site's cases were found.
Case = tuple[Path, Path, int]


def _write_dataset(out: Path, task: str, sites: dict[str, dict[str, list[Case]]], size: int, seed: int,
                   colors: dict | None, labels: dict[str, str], name: str | None, force: bool,
                   attribution: Path) -> Manifest:
    """Write `sites` ({site: {"train": cases, "test": cases}}) as a dataset folder, atomically."""
    preset = get_task(task)
    for site in labels:
        if site not in sites:
            raise DataError(f"--site-label {site}=...: no such site (sites: {', '.join(sites)})")
    for splits in sites.values():   # a mask that does not cover its image fails before anything is written
        for image, mask, _ in (case for cases in splits.values() for case in cases):
            if _pixel_size(image) != _pixel_size(mask):
                (iw, ih), (mw, mh) = _pixel_size(image), _pixel_size(mask)
                raise DataError(f"{mask}: mask is {mw}x{mh} pixels but its image {image.name} is {iw}x{ih}")
    check_target(out, force)
    manifest = Manifest.for_task(task, name or out.name, list(sites), img_size=size)
    manifest.sites = [type(s)(s.name, labels.get(s.name, s.label)) for s in manifest.sites]
    with staging_folder(out, force) as tmp:
        for site_index, (site, splits) in enumerate(sites.items()):
            for split in ("train", "test"):
                folder = tmp / site / split
                folder.mkdir(parents=True)
                for image, mask, index in splits[split]:
                    arrays = {
                        "image": load_image(image, preset.in_channels, size),
                        "mask": load_mask(mask, preset.num_classes, size, colors),
                    }
                    if split == "train":
                        rng = np.random.default_rng([seed, site_index, index, 2])
                        arrays.update(make_sparse_labels(arrays["mask"], preset.num_classes, rng, LABEL_KINDS))
                    write_case(folder / f"{image.stem}.h5", arrays)
        manifest.save(tmp)
        _copy_attribution(attribution, tmp)
        write_checksums(tmp)
    return manifest


def import_pngs(images: str | os.PathLike, masks: str | os.PathLike, out: str | os.PathLike, task: str,
                site_patterns: list[str] | None = None, size: int = 64, test_fraction: float = 0.25, seed: int = 0,
                mask_colors: list[str] | None = None, site_labels: list[str] | None = None,
                name: str | None = None, force: bool = False) -> Manifest:
    """Two flat folders (images, masks with the same names); sites by file-name pattern, split by seed."""
    preset = get_task(task)
    images, masks, out = Path(images), Path(masks), Path(out)
    for folder, option in ((images, "--images"), (masks, "--masks")):
        if not folder.is_dir():
            raise DataError(f"{folder}: {option} folder does not exist")
    _check_common(size, test_fraction)
    patterns = parse_site_patterns(site_patterns)
    labels = parse_site_labels(site_labels)
    colors = parse_mask_colors(mask_colors, preset.num_classes)
    files = _image_files(images)
    by_site = group_by_site(files, patterns)
    pairs = {p: _find_mask(p, masks) for p in files}  # fail on a missing mask before writing anything
    sites = {}
    for site_index, (site, paths) in enumerate(by_site.items()):
        train, test = split_cases(paths, test_fraction, seed, site_index)
        sites[site] = {split: [(p, pairs[p], paths.index(p)) for p in chosen]
                       for split, chosen in (("train", train), ("test", test))}
    return _write_dataset(out, task, sites, size, seed, colors, labels, name, force, images)


def _natural_key(text: str) -> list:
    """Domain2 before Domain10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def import_tree(root: str | os.PathLike, out: str | os.PathLike, task: str, image_dir: str = "image",
                mask_dir: str = "mask", site_glob: str = "*", size: int = 64, test_fraction: float = 0.25,
                seed: int = 0, mask_colors: list[str] | None = None, site_labels: list[str] | None = None,
                name: str | None = None, force: bool = False) -> Manifest:
    """One folder per site under `root`: `<site>/{train,test}/<image_dir>` (split kept) or
    `<site>/<image_dir>` (split by seed), masks in `<mask_dir>` beside the images, e.g. the DoFE
    fundus tree `Domain<k>/{train,test}/ROIs/{image,mask}` with `image_dir=ROIs/image`."""
    preset = get_task(task)
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise DataError(f"{root}: --tree folder does not exist")
    _check_common(size, test_fraction)
    labels = parse_site_labels(site_labels)
    colors = parse_mask_colors(mask_colors, preset.num_classes)
    folders = sorted((p for p in root.iterdir() if p.is_dir() and fnmatch.fnmatch(p.name, site_glob)),
                     key=lambda p: _natural_key(p.name))
    if not folders:
        raise DataError(f"{root}: no site folder matches --site-glob '{site_glob}'")
    sites = {folder.name: _site_splits(folder, index, image_dir, mask_dir, test_fraction, seed)
             for index, folder in enumerate(folders)}
    return _write_dataset(out, task, sites, size, seed, colors, labels, name, force, root)


def _site_splits(folder: Path, site_index: int, image_dir: str, mask_dir: str, test_fraction: float,
                 seed: int) -> dict[str, list[Case]]:
    splits = [s for s in ("train", "test") if (folder / s).is_dir()]
    if len(splits) == 1:
        missing = "test" if splits == ["train"] else "train"
        raise DataError(f"{folder}: has a {splits[0]}/ folder but no {missing}/ folder")
    if splits:  # the split the folders define is kept
        pairs = {split: _pairs(folder / split, image_dir, mask_dir) for split in splits}
    else:
        found = _pairs(folder, image_dir, mask_dir)
        train, test = split_cases(list(found), test_fraction, seed, site_index)
        pairs = {"train": {p: found[p] for p in train}, "test": {p: found[p] for p in test}}
    number = {image: i for i, image in enumerate([*pairs["train"], *pairs["test"]])}  # train first
    return {split: [(image, mask, number[image]) for image, mask in found.items()] for split, found in pairs.items()}


def _pairs(folder: Path, image_dir: str, mask_dir: str) -> dict[Path, Path]:
    """{image: mask} of one folder; every image needs a mask of the same name."""
    images, masks = folder / image_dir, folder / mask_dir
    for sub, option, value in ((images, "--image-dir", image_dir), (masks, "--mask-dir", mask_dir)):
        if not sub.is_dir():
            raise DataError(f"{sub}: no such folder ({option} {value})")
    return {image: _find_mask(image, masks) for image in _image_files(images)}


def _copy_attribution(source: Path, dest: Path) -> None:
    """Keep the source's licence/attribution files with the derived data (CC BY requires it)."""
    for folder in (source, source.parent):
        for glob in ATTRIBUTION_GLOBS:
            for path in sorted(folder.glob(glob)):
                if path.is_file() and not (dest / path.name).exists():
                    shutil.copyfile(path, dest / path.name)
