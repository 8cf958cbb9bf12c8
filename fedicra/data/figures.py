"""Figures for a dataset: a per-site preview grid and one case with all five sparse annotations.

matplotlib is imported inside the functions so the CLI stays fast to start.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fedicra.data.layout import list_cases, read_case
from fedicra.data.manifest import LABEL_KINDS, Manifest

CLASS_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")  # background, class 1, class 2, ...


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """(C,H,W) image -> (H,W,3) for display."""
    return np.repeat(image[0][..., None], 3, axis=-1) if image.shape[0] == 1 else image[:3].transpose(1, 2, 0)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from fedicra.atomic import atomic_path

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def _outline(ax, mask: np.ndarray, num_classes: int) -> None:
    for c in range(1, num_classes):
        if (mask >= c).any() and (mask < c).any():
            ax.contour(mask >= c, levels=[0.5], colors=[CLASS_COLORS[c % len(CLASS_COLORS)]], linewidths=0.8)


def preview_grid(root: str | os.PathLike, manifest: Manifest, path: str | os.PathLike, per_site: int = 6) -> Path:
    """One row per site: the first training cases, full-mask outlines drawn over the image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(manifest.sites)
    fig, axes = plt.subplots(rows, per_site, figsize=(1.6 * per_site, 1.7 * rows), squeeze=False)
    for row, site in enumerate(manifest.sites):
        cases = list_cases(root, manifest, row, "train")[:per_site]
        for col in range(per_site):
            ax = axes[row, col]
            ax.set_axis_off()
            if col >= len(cases):
                continue
            arrays = read_case(cases[col], manifest, keys=("image", "mask"))
            ax.imshow(_as_rgb(arrays["image"]), interpolation="nearest")
            _outline(ax, arrays["mask"], manifest.num_classes)
        axes[row, 0].set_axis_on()
        axes[row, 0].set_xticks([])
        axes[row, 0].set_yticks([])
        axes[row, 0].set_ylabel(f"{site.name}\n({site.label})", fontsize=8)
    fig.suptitle(f"{manifest.name}: first training cases per site, mask outlines", fontsize=9)
    return _save(fig, Path(path))


def label_figure(arrays: dict[str, np.ndarray], manifest: Manifest, path: str | os.PathLike, title: str = "") -> Path:
    """Image, full mask and every available sparse label map of one case, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    kinds = [k for k in LABEL_KINDS if k in arrays]
    fig, axes = plt.subplots(1, 2 + len(kinds), figsize=(2.2 * (2 + len(kinds)), 2.6), squeeze=False)
    axes = axes[0]
    rgb = _as_rgb(arrays["image"] if arrays["image"].ndim == 3 else arrays["image"][None])
    cmap = ListedColormap(list(CLASS_COLORS[: manifest.num_classes]))
    axes[0].imshow(rgb, interpolation="nearest")
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(arrays["mask"], cmap=cmap, vmin=0, vmax=manifest.num_classes - 1, interpolation="nearest")
    axes[1].set_title("mask (full)", fontsize=9)
    for ax, kind in zip(axes[2:], kinds):
        label = np.ma.masked_equal(arrays[kind], manifest.unlabeled)  # unlabeled: show the faded image
        ax.imshow(0.35 * rgb + 0.65, interpolation="nearest")
        ax.imshow(label, cmap=cmap, vmin=0, vmax=manifest.num_classes - 1, interpolation="nearest")
        share = float(np.mean(arrays[kind] != manifest.unlabeled))
        ax.set_title(f"{kind}\n{100 * share:.1f}% labelled", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, Path(path))
