"""Benchmark figures (PNG and PDF, headless): per-site Dice, validation curves, Dice by annotation
type, fairness across sites, label efficiency, qualitative panels and the critical-difference diagram.

Every function takes tidy tables (see `fedicra.report.collect`) and an output stem; it writes
`<stem>.png` and `<stem>.pdf` and returns both paths.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fedicra.report.io import atomic_savefig
from fedicra.report.stats import RankingResult, natural_key

# Method families, each with its own hue, so neighbouring methods of one family are shades of one
# colour and a reader can tell the families apart in every figure (variants take their base's family).
FAMILIES = {
    "global FL": ("Blues", ("fedavg", "fedprox")),
    "personalized FL": ("Greens", ("fedbn", "fedper", "fedrep", "ditto", "fedala", "fedap", "metafed", "fedlc")),
    "FedICRA and ablations": ("Reds", ("fedicra",)),
    "bounds": ("Greys", ("local", "centralized", "centralized_full")),
}
OTHER_FAMILY = ("other", "Purples")
SMALL_MULTIPLES_ABOVE = 8   # more lines than this on one axis: one panel per family


def family_of(base_method: str) -> str:
    return next((f for f, (_, names) in FAMILIES.items() if base_method in names), OTHER_FAMILY[0])


def method_palette(base_methods: dict[str, str]) -> dict[str, tuple]:
    """method -> colour, fixed for a whole report: `base_methods` maps every method of the report to its
    base method (a variant such as `fedicra-no_contrastive` to `fedicra`)."""
    import seaborn as sns

    cmaps = {f: cmap for f, (cmap, _) in FAMILIES.items()} | {OTHER_FAMILY[0]: OTHER_FAMILY[1]}
    palette = {}
    for family, cmap in cmaps.items():
        members = sorted((m for m, base in base_methods.items() if family_of(base) == family), key=natural_key)
        shades = sns.color_palette(cmap, len(members) + 2)[2:]   # skip the palest shades
        palette.update(zip(members, shades))
    return palette


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


def per_site_dice(cases: pd.DataFrame, methods: list[str], stem: Path, title: str = "",
                  palette: dict | None = None) -> list[Path]:
    """Bars of per-site mean Dice per method; error bars = std over seeds."""
    import seaborn as sns

    plt = pyplot()
    per_seed = cases.groupby(["method", "seed", "site_name"], as_index=False)["mean_dice"].mean()
    sites = sorted(per_seed["site_name"].unique(), key=natural_key)
    order = _order(per_seed["method"], methods)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(sites) + 0.25 * len(order)), 4))
    sns.barplot(data=per_seed, x="site_name", y="mean_dice", hue="method", order=sites, hue_order=order,
                errorbar="sd", ax=ax, palette=palette)
    ax.set(xlabel="site", ylabel="mean Dice (test)", ylim=(0, 1), title=title)
    ax.legend(fontsize="small", ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    return save_figure(fig, stem)


def validation_curves(rounds: pd.DataFrame, methods: list[str], stem: Path, title: str = "",
                      palette: dict | None = None, families: dict[str, str] | None = None) -> list[Path]:
    """Validation mean Dice (averaged over sites) against the round; band = std over seeds. With more
    than `SMALL_MULTIPLES_ABOVE` methods, one panel per method family (`families`: method -> family)."""
    import seaborn as sns

    plt = pyplot()
    # rows with site -1 carry round-level traffic, not validation scores
    rounds = rounds[(rounds["site"] >= 0) & rounds["mean_dice"].notna()]
    curve = rounds.groupby(["method", "seed", "round"], as_index=False)["mean_dice"].mean()
    order = _order(curve["method"], methods)
    groups = {"": order}
    if len(order) > SMALL_MULTIPLES_ABOVE and families:
        groups = {}
        for method in order:
            groups.setdefault(families.get(method, OTHER_FAMILY[0]), []).append(method)
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups) + 2, 4), squeeze=False, sharey=True)
    for ax, (name, members) in zip(axes[0], groups.items()):
        part = curve[curve["method"].isin(members)]
        if part.empty:
            ax.text(0.5, 0.5, "no validation scores (val_fraction 0)", ha="center", transform=ax.transAxes)
        else:
            sns.lineplot(data=part, x="round", y="mean_dice", hue="method", hue_order=members, errorbar="sd",
                         ax=ax, palette=palette)
            ax.legend(fontsize="small")
        ax.set(xlabel="round", ylabel="validation mean Dice", title=name or title)
    if len(groups) > 1:
        fig.suptitle(title)
    return save_figure(fig, stem)


def dice_by_annotation(effect: pd.DataFrame, methods: list[str], stem: Path, palette: dict | None = None) -> list[Path]:
    """Mean Dice per training label kind, averaged over sites (`diagnostics.label_kind_effect`), per
    method; error bars = std over sites; one panel per dataset."""
    import seaborn as sns

    plt = pyplot()
    per_seed = effect
    datasets = sorted(per_seed["dataset"].unique())
    order = _order(per_seed["method"], methods)
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        part = per_seed[per_seed["dataset"] == dataset]
        kinds = sorted(part["label"].unique())
        sns.barplot(data=part, x="label", y="mean_dice", hue="method", hue_order=order, order=kinds,
                    errorbar=None, ax=ax, palette=palette)
        _error_bars(ax, part, "label", kinds, order, "std_over_sites")
        ax.set(title=dataset, xlabel="training label kind", ylabel="mean Dice over sites (test)", ylim=(0, 1))
        ax.tick_params(axis="x", rotation=30)
        ax.get_legend().remove()
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize="small", ncol=1, bbox_to_anchor=(1.0, 0.9), loc="upper left")
    return save_figure(fig, stem)


def _error_bars(ax, frame, x, x_order, hue_order, column) -> None:
    """Error bars from a precomputed column onto a seaborn bar plot (bars are drawn hue by hue)."""
    for patch_group, method in zip(ax.containers, hue_order):
        for bar, key in zip(patch_group, x_order):
            hit = frame[(frame[x] == key) & (frame["method"] == method)]
            if len(hit) and np.isfinite(hit[column].iloc[0]):
                ax.errorbar(bar.get_x() + bar.get_width() / 2, bar.get_height(), yerr=hit[column].iloc[0],
                            color="black", linewidth=0.8, capsize=2)


def fairness_points(per_site: pd.DataFrame, methods: list[str], stem: Path, title: str = "",
                    palette: dict | None = None) -> list[Path]:
    """One point per site per method (mean Dice over seeds), worst site marked with a black ring."""
    plt = pyplot()
    order = _order(per_site["method"], methods)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(order) + 2), 4))
    for x, method in enumerate(order):
        part = per_site[per_site["method"] == method]
        colour = (palette or {}).get(method)
        ax.scatter(np.full(len(part), x), part["mean_dice"], color=colour, s=22, zorder=2)
        worst = part["mean_dice"].min()
        ax.scatter([x], [worst], facecolors="none", edgecolors="black", s=70, zorder=3)
        ax.hlines(part["mean_dice"].mean(), x - 0.3, x + 0.3, color=colour or "black", linewidth=1.5)
    ax.set_xticks(range(len(order)), order, rotation=40, ha="right")
    ax.set(ylabel="site mean Dice (test)", ylim=(0, 1), title=title or "sites per method (ring = worst site, bar = mean)")
    return save_figure(fig, stem)


def label_efficiency(ratios: pd.DataFrame, methods: list[str], stem: Path, palette: dict | None = None) -> list[Path]:
    """Weak-label Dice as a fraction of full-mask Dice, per label kind and method (mean over sites, std bars)."""
    import seaborn as sns

    plt = pyplot()
    datasets = sorted(ratios["dataset"].unique())
    order = _order(ratios["method"], methods)
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets) + 2, 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        part = ratios[ratios["dataset"] == dataset]
        summary = part.groupby(["label", "method"], as_index=False)["ratio"].agg(ratio="mean", std="std")
        kinds = sorted(summary["label"].unique())
        present = [m for m in order if m in set(summary["method"])]
        sns.barplot(data=summary, x="label", y="ratio", hue="method", hue_order=present, order=kinds,
                    errorbar=None, ax=ax, palette=palette)
        _error_bars(ax, summary, "label", kinds, present, "std")
        ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
        ax.set(title=dataset, xlabel="training label kind", ylabel="weak Dice / full-mask Dice")
        ax.tick_params(axis="x", rotation=30)
        ax.legend(fontsize="small", bbox_to_anchor=(1.01, 1), loc="upper left")
    return save_figure(fig, stem)


def _show_image(ax, image: np.ndarray) -> None:
    image = np.asarray(image, dtype=float)
    if image.ndim == 3 and image.shape[0] in (1, 3):
        image = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)
    ax.imshow(np.clip(image, 0, 1), cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)


OUTLINE_TRUTH, OUTLINE_PREDICTION = "#00e000", "#ff2020"


def _outline(ax, label: np.ndarray, num_classes: int, colour: str, style: str = "solid") -> None:
    """Contours of every foreground class (ODOC: cup and disc) over the image."""
    label = np.asarray(label)
    for cls in range(1, num_classes):
        region = (label >= cls) & (label < num_classes)
        if region.any() and not region.all():
            ax.contour(region.astype(float), levels=[0.5], colors=[colour], linewidths=0.9, linestyles=style)


def _show_sparse(ax, label: np.ndarray, num_classes: int) -> None:
    """Labelled pixels in colour over the training image; unlabeled pixels (value num_classes) transparent."""
    label = np.asarray(label)
    shown = np.ma.masked_where(label >= num_classes, label)
    ax.imshow(shown, cmap="autumn", vmin=0, vmax=max(num_classes - 1, 1), interpolation="nearest", alpha=0.9)


def qualitative_panel(samples: dict[str, list[dict]], stem: Path, num_classes: int, title: str = "",
                      site_names: dict[int, str] | None = None) -> list[Path]:
    """Rows = sites; columns = the sparse training label over its image, the test image with the full
    mask outlined (green), then each method's prediction outlined (red) over the same image.

    `samples` maps method -> `fedicra.record.read_samples` entries (one seed, one assignment), i.e. the
    sample each site wrote locally.
    """
    plt = pyplot()
    first = next(iter(samples.values()))
    sites = [entry["site"] for entry in first]
    columns = ["training label", "test image + mask", *samples]
    fig, axes = plt.subplots(len(sites), len(columns), figsize=(1.7 * len(columns), 1.7 * len(sites)),
                             squeeze=False)
    for r, entry in enumerate(first):
        _show_image(axes[r][0], entry["train_image"])
        _show_sparse(axes[r][0], entry["train_label"], num_classes)
        _show_image(axes[r][1], entry["image"])
        _outline(axes[r][1], entry["mask"], num_classes, OUTLINE_TRUTH)
        for c, (method, entries) in enumerate(samples.items(), start=2):
            match = next((e for e in entries if e["site"] == entry["site"]), None)
            if match is not None:
                _show_image(axes[r][c], match["image"])
                _outline(axes[r][c], match["mask"], num_classes, OUTLINE_TRUTH, "dashed")
                _outline(axes[r][c], match["prediction"], num_classes, OUTLINE_PREDICTION)
        axes[r][0].set_ylabel((site_names or {}).get(entry["site"], f"site{entry['site']}"), fontsize="small")
    for c, name in enumerate(columns):
        axes[0][c].set_title(name, fontsize="small")
    for ax in axes.flat:
        ax.set_xticks([]); ax.set_yticks([])
    fig.text(0.5, 0.0, "green: full mask (dashed beside predictions); red: prediction", ha="center", fontsize="small")
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
