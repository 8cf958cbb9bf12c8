"""Benchmark figures (PNG and PDF, headless): per-site Dice, validation curves, Dice by annotation
type, qualitative panels and the critical-difference diagram.

Every function takes tidy tables (see `fedicra.report.collect`) and an output stem; it writes
`<stem>.png` and `<stem>.pdf` and returns both paths.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fedicra.report.io import atomic_savefig
from fedicra.report.predictions import read_predictions
from fedicra.report.stats import RankingResult, natural_key


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, stem: Path) -> list[Path]:
    paths = [Path(f"{stem}.png"), Path(f"{stem}.pdf")]
    for path in paths:
        atomic_savefig(fig, path)
    pyplot().close(fig)
    return paths


def _order(present, methods: list[str]) -> list[str]:
    present = list(dict.fromkeys(present))
    return [m for m in methods if m in present] + sorted(set(present) - set(methods))


def per_site_dice(cases: pd.DataFrame, methods: list[str], stem: Path, title: str = "") -> list[Path]:
    """Bars of per-site mean Dice per method; error bars = std over seeds."""
    import seaborn as sns

    plt = pyplot()
    per_seed = cases.groupby(["method", "seed", "site_name"], as_index=False)["mean_dice"].mean()
    sites = sorted(per_seed["site_name"].unique(), key=natural_key)
    order = _order(per_seed["method"], methods)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(sites) + 0.25 * len(order)), 4))
    sns.barplot(data=per_seed, x="site_name", y="mean_dice", hue="method", order=sites, hue_order=order,
                errorbar="sd", ax=ax)
    ax.set(xlabel="site", ylabel="mean Dice (test)", ylim=(0, 1), title=title)
    ax.legend(fontsize="small", ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    return save_figure(fig, stem)


def validation_curves(rounds: pd.DataFrame, methods: list[str], stem: Path, title: str = "") -> list[Path]:
    """Validation mean Dice (averaged over sites) against the round; band = std over seeds."""
    import seaborn as sns

    plt = pyplot()
    # rows with site -1 carry round-level traffic, not validation scores
    rounds = rounds[(rounds["site"] >= 0) & rounds["mean_dice"].notna()]
    curve = rounds.groupby(["method", "seed", "round"], as_index=False)["mean_dice"].mean()
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=curve, x="round", y="mean_dice", hue="method", hue_order=_order(curve["method"], methods),
                 errorbar="sd", ax=ax)
    ax.set(xlabel="round", ylabel="validation mean Dice", title=title)
    ax.legend(fontsize="small", ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    return save_figure(fig, stem)


def dice_by_annotation(cases: pd.DataFrame, methods: list[str], stem: Path) -> list[Path]:
    """Mean Dice of a site grouped by the label kind it trained with, per method, one panel per dataset."""
    import seaborn as sns

    plt = pyplot()
    per_seed = cases.groupby(["dataset", "method", "seed", "label"], as_index=False)["mean_dice"].mean()
    datasets = sorted(per_seed["dataset"].unique())
    order = _order(per_seed["method"], methods)
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        part = per_seed[per_seed["dataset"] == dataset]
        sns.barplot(data=part, x="label", y="mean_dice", hue="method", hue_order=order,
                    order=sorted(part["label"].unique()), errorbar="sd", ax=ax)
        ax.set(title=dataset, xlabel="training label kind", ylabel="mean Dice (test)", ylim=(0, 1))
        ax.tick_params(axis="x", rotation=30)
        ax.get_legend().remove()
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize="small", ncol=1, bbox_to_anchor=(1.0, 0.9), loc="upper left")
    return save_figure(fig, stem)


def _show_image(ax, image: np.ndarray) -> None:
    image = np.asarray(image, dtype=float)
    if image.ndim == 3 and image.shape[0] in (1, 3):
        image = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)
    ax.imshow(np.clip(image, 0, 1), cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)


def _show_label(ax, label: np.ndarray, num_classes: int) -> None:
    """Classes in colour; the unlabeled value (num_classes) is shown transparent over grey."""
    label = np.asarray(label)
    ax.imshow(np.zeros_like(label, dtype=float), cmap="gray", vmin=0, vmax=1)
    shown = np.ma.masked_where(label >= num_classes, label)
    ax.imshow(shown, cmap="viridis", vmin=0, vmax=max(num_classes - 1, 1), interpolation="nearest")


def qualitative_panel(prediction_files: dict[str, Path], stem: Path, num_classes: int, title: str = "",
                      site_names: dict[str, str] | None = None) -> list[Path]:
    """Rows = sites; columns = image, full mask, sparse training label, each method's prediction.

    `prediction_files` maps method -> predictions.npz (one seed, one assignment); `site_names` relabels
    the file's site keys (e.g. `site0` -> `Domain1`).
    """
    plt = pyplot()
    per_method = {m: read_predictions(p) for m, p in prediction_files.items()}
    first = next(iter(per_method.values()))
    sites = [entry["site"] for entry in first]
    columns = ["image", "full mask", "sparse label", *per_method]
    fig, axes = plt.subplots(len(sites), len(columns), figsize=(1.6 * len(columns), 1.6 * len(sites)),
                             squeeze=False)
    for r, entry in enumerate(first):
        _show_image(axes[r][0], entry["image"])
        _show_label(axes[r][1], entry["mask"], num_classes)
        if entry["label"] is not None:
            _show_label(axes[r][2], entry["label"], num_classes)
        for c, (method, entries) in enumerate(per_method.items(), start=3):
            match = next((e for e in entries if e["site"] == entry["site"]), None)
            if match is not None:
                _show_label(axes[r][c], match["prediction"], num_classes)
        name = (site_names or {}).get(entry["site"], entry["site"])
        axes[r][0].set_ylabel(f"{name}\n{entry['case']}".strip(), fontsize="small")
    for c, name in enumerate(columns):
        axes[0][c].set_title(name, fontsize="small")
    for ax in axes.flat:
        ax.set_xticks([]); ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return save_figure(fig, stem)


def cd_diagram(result: RankingResult, stem: Path) -> list[Path]:
    """Critical-difference diagram: average ranks, methods joined when Nemenyi finds no difference."""
    import scikit_posthocs as sp

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(result.ranks) + 1.2))
    sp.critical_difference_diagram(result.ranks, result.nemenyi, alpha=result.alpha, ax=ax)
    ax.set_title(f"Average rank (mean Dice), Nemenyi CD = {result.critical_difference:.2f}, "
                 f"{result.matrix.shape[0]} blocks", fontsize="small")
    return save_figure(fig, stem)
