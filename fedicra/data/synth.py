"""Synthetic multi-site phantoms in the site layout: FAZ-like OCTA and ODOC-like fundus images.

Each site has its own acquisition look (contrast, brightness or colour cast, noise, blur, vessel
density, structure size, field of view) and its own number of cases, so the five sites show the kind
of domain shift and size imbalance that real multi-centre data has. Everything is drawn from
`numpy.random.default_rng` seeded by (seed, site, split, case); the written files are byte-identical
for a given seed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from fedicra.data.errors import DataError
from fedicra.data.layout import write_case, write_checksums
from fedicra.data.manifest import LABEL_KINDS, Manifest, get_task
from fedicra.data.sparse import make_sparse_labels
from fedicra.data.staging import check_target, staging_folder

# training cases per site at scale 1 (unequal on purpose); test sets are a third of that but at least
# MIN_TEST_CASES, so per-site tables and paired tests have the power to say something
TRAIN_COUNTS = (24, 16, 20, 40, 8)
MIN_TEST_CASES = 20
SPLIT_CODES = {"train": 0, "test": 1}
PREVIEW_FILE = "preview.png"


@dataclass(frozen=True)
class SiteLook:
    """How one site's scanner and population differ (all in relative units)."""

    contrast: float
    brightness: float
    noise: float  # std of additive Gaussian noise
    blur: float  # Gaussian blur in px at 256 px
    density: float  # capillary / vessel density (1 = typical)
    structure: float  # FAZ or disc size (1 = typical)
    fov: float  # field of view: >1 zooms out (6 mm OCTA scans, wider fundus crops)
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)  # RGB colour cast (fundus only)


FAZ_SITES = (
    SiteLook(contrast=1.00, brightness=0.00, noise=0.06, blur=1.0, density=1.0, structure=1.00, fov=1.0),
    SiteLook(contrast=0.80, brightness=0.08, noise=0.04, blur=0.5, density=1.3, structure=1.15, fov=1.0),
    SiteLook(contrast=0.90, brightness=-0.05, noise=0.05, blur=1.5, density=0.8, structure=0.85, fov=1.5),
    SiteLook(contrast=1.20, brightness=-0.02, noise=0.08, blur=2.0, density=1.1, structure=0.95, fov=1.2),
    SiteLook(contrast=0.70, brightness=0.12, noise=0.03, blur=0.8, density=1.5, structure=1.25, fov=1.0),
)
ODOC_SITES = (
    SiteLook(contrast=1.00, brightness=0.00, noise=0.02, blur=1.0, density=1.0, structure=1.00, fov=1.0,
             cast=(1.00, 1.00, 1.00)),
    SiteLook(contrast=0.80, brightness=-0.10, noise=0.03, blur=2.0, density=0.8, structure=1.25, fov=0.8,
             cast=(1.05, 0.85, 0.70)),
    SiteLook(contrast=1.10, brightness=0.05, noise=0.02, blur=0.5, density=1.2, structure=0.75, fov=1.4,
             cast=(0.90, 1.00, 1.10)),
    SiteLook(contrast=0.90, brightness=0.10, noise=0.04, blur=1.5, density=1.0, structure=0.85, fov=1.2,
             cast=(1.10, 1.05, 0.85)),
    SiteLook(contrast=1.20, brightness=-0.05, noise=0.03, blur=1.0, density=1.4, structure=1.10, fov=1.0,
             cast=(0.95, 0.90, 1.00)),
)


def case_counts(scale: float = 1.0, cases: int | None = None) -> list[tuple[int, int]]:
    """(train, test) per site: `cases` per site for all (test a third of it: small unit-test sets), or the
    default unequal training counts times `scale` with at least MIN_TEST_CASES test cases per site."""
    if cases is not None:
        if cases < 1:
            raise DataError(f"--cases must be at least 1, got {cases}")
        return [(cases, max(1, round(cases / 3)))] * len(TRAIN_COUNTS)
    if not scale > 0:
        raise DataError(f"--scale must be positive, got {scale}")
    out = []
    for n in TRAIN_COUNTS:
        train = max(2, round(n * scale))
        out.append((train, max(MIN_TEST_CASES, round(train / 3))))
    return out


# --- drawing helpers --------------------------------------------------------------------------
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1]."""
    c = (np.arange(size, dtype=np.float64) + 0.5) / size * 2 - 1
    return np.meshgrid(c, c, indexing="ij")


def _blob(yy, xx, cy, cx, radius, rng, wobble: float, aspect: float = 1.0) -> np.ndarray:
    """Signed radial coordinate of an irregular star-shaped blob (< 1 inside)."""
    dy, dx = yy - cy, (xx - cx) * aspect
    theta = np.arctan2(dy, dx)
    r = np.hypot(dy, dx)
    boundary = np.ones_like(theta)
    for k in range(2, 6):
        boundary += wobble * rng.uniform(0.3, 1.0) / (k - 1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return r / (radius * boundary)


def _curves(rng, size: int, starts: np.ndarray, headings: np.ndarray, length: float, wiggle: float,
            branch_p: float = 0.0) -> list[np.ndarray]:
    """Random-walk curves (list of (N,2) float pixel coordinates), optionally branching once."""
    step = 0.5
    n_steps = max(2, int(length * size / step))
    out = []
    pending = [(np.asarray(s, float), float(h), n_steps) for s, h in zip(starts, headings)]
    while pending:
        pos, heading, steps = pending.pop()
        turn = np.cumsum(rng.normal(0, wiggle, size=steps)) * 0.15
        angles = heading + ndimage.gaussian_filter1d(turn, 3)
        pts = pos + np.cumsum(step * np.stack([np.sin(angles), np.cos(angles)], axis=1), axis=0)
        out.append(pts)
        if branch_p and steps > 40 and rng.random() < branch_p:
            at = int(rng.integers(steps // 4, steps // 2))
            side = rng.choice([-1.0, 1.0])
            pending.append((pts[at], angles[at] + side * rng.uniform(0.4, 0.9), steps - at))
    return out


def _rasterise(size: int, curves: list[np.ndarray], width: float) -> np.ndarray:
    """Soft vessel map in [0,1] for curves of one width."""
    canvas = np.zeros((size, size))
    for pts in curves:
        idx = np.rint(pts).astype(np.int64)
        ok = (idx >= 0).all(axis=1) & (idx < size).all(axis=1)
        canvas[idx[ok, 0], idx[ok, 1]] = 1.0
    soft = ndimage.gaussian_filter(canvas, max(0.5, width))
    peak = soft.max()
    return soft / peak if peak > 0 else soft


def _finish(image: np.ndarray, look: SiteLook, size: int, rng) -> np.ndarray:
    """Acquisition: blur, contrast/brightness, noise, then upstream's min-max normalisation."""
    s = size / 256
    axes_blur = (0, look.blur * s, look.blur * s) if image.ndim == 3 else look.blur * s
    image = ndimage.gaussian_filter(image, axes_blur)
    image = 0.5 + look.contrast * (image - 0.5) + look.brightness
    image = image + rng.normal(0, look.noise, size=image.shape)
    image = np.clip(image, 0, 1)
    lo, hi = image.min(), image.max()
    return ((image - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32)


# --- phantoms ---------------------------------------------------------------------------------
def faz_phantom(size: int, look: SiteLook, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """OCTA en-face: bright capillary mesh, a few large vessels, a dark irregular FAZ near the centre."""
    yy, xx = _grid(size)
    s = size / 256
    radius = rng.uniform(0.14, 0.22) * look.structure / look.fov
    cy, cx = rng.uniform(-0.08, 0.08, size=2)
    rho = _blob(yy, xx, cy, cx, radius, rng, wobble=0.25)
    mask = (rho < 1).astype(np.uint8)
    # capillaries: thin bright ridges at the zero crossings of band-passed noise
    cap_sigma = max(0.7, 3.0 * s / (look.density * look.fov ** 0.5))
    noise = ndimage.gaussian_filter(rng.normal(size=(size, size)), cap_sigma)
    noise /= noise.std() + 1e-12
    capillaries = np.exp(-(noise / 0.6) ** 2)
    # large vessels: arcs that wind around the fovea, entering from the border
    n_vessels = int(rng.integers(4, 8))
    angle = rng.uniform(0, 2 * np.pi, size=n_vessels)
    starts = np.stack([size / 2 - 0.55 * size * np.sin(angle), size / 2 - 0.55 * size * np.cos(angle)], axis=1)
    headings = angle + rng.uniform(-0.6, 0.6, size=n_vessels)
    vessels = _rasterise(size, _curves(rng, size, starts, headings, 0.9, 0.4, branch_p=0.5), 1.6 * s / look.fov)
    # avascular zone: flow fades to zero over a soft rim just inside the mask boundary
    perfusion = np.clip((rho - 0.9) / 0.25, 0, 1)
    image = 0.15 + perfusion * (0.55 * capillaries + 0.6 * vessels)
    return _finish(image, look, size, rng), mask


def odoc_phantom(size: int, look: SiteLook, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Fundus crop: orange-red retina, bright optic disc with a brighter cup, vessels leaving the disc."""
    yy, xx = _grid(size)
    s = size / 256
    disc_r = rng.uniform(0.26, 0.34) * look.structure / look.fov
    cy, cx = rng.uniform(-0.12, 0.12, size=2)
    aspect = rng.uniform(0.9, 1.1)
    disc_rho = _blob(yy, xx, cy, cx, disc_r, rng, wobble=0.05, aspect=aspect)
    cdr = rng.uniform(0.35, 0.7)  # cup-to-disc ratio
    ccy, ccx = cy + rng.uniform(-0.1, 0.1) * disc_r, cx + rng.uniform(-0.15, 0.15) * disc_r
    cup_rho = _blob(yy, xx, ccy, ccx, cdr * disc_r, rng, wobble=0.08, aspect=aspect)
    disc, cup = disc_rho < 1, cup_rho < 1
    cup &= disc
    mask = np.where(cup, 1, np.where(disc, 2, 0)).astype(np.uint8)

    # retina: red-orange with slow illumination changes, dark outside a circular field of view
    coarse = rng.normal(size=(6, 6))  # smooth field from a coarse grid: cheaper than a wide blur
    shade = ndimage.zoom(coarse, size / 6, order=3, grid_mode=True, mode="nearest")[:size, :size]
    shade = 0.85 + 0.15 * shade / (np.abs(shade).max() + 1e-12)
    fov_r = 1.35 / look.fov
    fov = np.clip((fov_r - np.hypot(yy, xx)) / 0.05, 0, 1)
    retina = np.array([0.75, 0.35, 0.15])[:, None, None] * shade * fov
    # disc and cup brighten smoothly; the images' edges are soft while the mask is hard
    edge = 2.0 * s
    disc_soft = ndimage.gaussian_filter(disc.astype(float), edge)
    cup_soft = ndimage.gaussian_filter(cup.astype(float), edge * 1.5)
    image = retina * (1 - disc_soft) + np.array([0.95, 0.75, 0.45])[:, None, None] * disc_soft
    image = image * (1 - cup_soft) + np.array([1.0, 0.92, 0.78])[:, None, None] * cup_soft
    # vessel tree leaving the disc centre, darker and redder than the retina
    n_vessels = int(rng.integers(4, 7) * look.density)
    centre = np.array([(cy + 1) / 2 * size, (cx + 1) / 2 * size])
    angle = np.linspace(0, 2 * np.pi, n_vessels, endpoint=False) + rng.uniform(0, 2 * np.pi)
    starts = np.repeat(centre[None], n_vessels, axis=0)
    curves = _curves(rng, size, starts, angle + rng.uniform(-0.3, 0.3, size=n_vessels), 0.9, 0.25, branch_p=0.6)
    vessels = _rasterise(size, curves, 2.0 * s / look.fov) * fov
    image = image * (1 - 0.7 * vessels) + np.array([0.45, 0.08, 0.05])[:, None, None] * 0.7 * vessels
    image = image * np.asarray(look.cast)[:, None, None]
    return _finish(image, look, size, rng), mask


PHANTOMS = {"faz": (faz_phantom, FAZ_SITES), "odoc": (odoc_phantom, ODOC_SITES)}


def case_rng(seed: int, site: int, split: str, case: int) -> np.random.Generator:
    return np.random.default_rng([seed, site, SPLIT_CODES[split], case])


def make_case(task: str, size: int, site: int, split: str, case: int, seed: int) -> dict[str, np.ndarray]:
    """One case's arrays as written to disk (training cases also get the five sparse maps)."""
    phantom, looks = PHANTOMS[task]
    rng = case_rng(seed, site, split, case)
    image, mask = phantom(size, looks[site % len(looks)], rng)
    arrays = {"image": image, "mask": mask}
    if split == "train":
        arrays.update(make_sparse_labels(mask, get_task(task).num_classes, rng, LABEL_KINDS))
    return arrays


def synthesize(task: str, out: str | os.PathLike, size: int = 64, seed: int = 0, scale: float = 1.0,
               cases: int | None = None, force: bool = False, name: str | None = None,
               preview: bool = False) -> Manifest:
    """Write a 5-site dataset to `out` (built in a temporary folder beside it, renamed at the end).

    `preview` adds `preview.png` (one row per site, mask outlines); it is not part of the checksums."""
    get_task(task)
    if size < 16:
        raise DataError(f"--size must be at least 16, got {size}")
    counts = case_counts(scale, cases)
    out = Path(out)
    check_target(out, force)
    manifest = Manifest.for_task(task, name or f"synth-{task}", [f"Domain{k + 1}" for k in range(len(counts))],
                                 img_size=size)
    with staging_folder(out, force) as tmp:
        for site, (n_train, n_test) in enumerate(counts):
            for split, n in (("train", n_train), ("test", n_test)):
                folder = tmp / manifest.sites[site].name / split
                folder.mkdir(parents=True)
                for case in range(n):
                    write_case(folder / f"case{case:04d}.h5", make_case(task, size, site, split, case, seed))
        manifest.save(tmp)
        write_checksums(tmp)
        if preview:
            from fedicra.data.figures import preview_grid

            preview_grid(tmp, manifest, tmp / PREVIEW_FILE)
    return manifest
