"""Paper-style tables in Markdown and LaTeX (booktabs): results per dataset, cost, ranking.

Cells are `mean ± std` over seeds; the best value of each column is bold; a dagger marks a method
that is significantly worse than the column's best (paired Wilcoxon, see `fedicra.report.stats`); the
full-mask bound is shown but is never the best and is not tested.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedicra.report.diagnostics import competitors
from fedicra.report.stats import (MIN_SEEDS_FOR_SIGNIFICANCE, RankingResult, WILCOXON_TEST, compare_methods,
                                  natural_key)

METRIC_LABELS = {"dice": ("Dice (%)", 100.0), "hd95": ("HD95 (px)", 1.0), "assd": ("ASSD (px)", 1.0),
                 "jaccard": ("Jaccard (%)", 100.0)}


@dataclass
class Table:
    """A rendered-agnostic table: header row, body rows of cells, cell styles."""
    caption: str
    header: list[str]
    rows: list[list[str]]
    bold: list[list[bool]]
    dagger: list[list[bool]]
    label: str = ""


def format_cell(mean: float, std: float, scale: float = 1.0, digits: int = 2) -> str:
    """`mean ± std` (std omitted when there is a single seed); `–` for a missing value."""
    if mean is None or not np.isfinite(mean):
        return "–"
    text = f"{mean * scale:.{digits}f}"
    if std is not None and np.isfinite(std):
        text += f" ± {std * scale:.{digits}f}"
    return text


def results_tables(cases: pd.DataFrame, dataset: str, assignment: str, methods: list[str],
                   metrics=("dice", "hd95"), alpha: float = 0.05) -> list[Table]:
    """One table per metric: rows = methods, columns = site x structure, then the site average."""
    compared = compare_methods(cases, metrics=metrics, alpha=alpha)
    order = [m for m in methods if m in set(compared["method"])] + \
        sorted(set(compared["method"]) - set(methods))
    n_seeds = int(compared["n_seeds"].max()) if not compared.empty else 0
    references = sorted(set(compared.loc[compared["reference"], "method"])) if not compared.empty else []
    shown = (f" {', '.join(references)} trained on full masks: shown as the bound, not bold, not tested, "
             "never the best." if references else "")
    tables = []
    for metric in metrics:
        name, scale = METRIC_LABELS.get(metric, (metric, 1.0))
        part = compared[compared["metric"] == metric]
        structs = list(dict.fromkeys(part["structure"]))
        sites = sorted({s for s in part["site"] if isinstance(s, str)}, key=natural_key)
        columns = [(site, s) for site in sites for s in structs] + [(None, s) for s in structs]
        header = ["Method"] + [(site or "Average") + (f" {s}" if len(structs) > 1 else "") for site, s in columns]
        rows, bold, dagger = [], [], []
        for method in order:
            row, b, d = [method], [False], [False]
            for site, s in columns:
                hit = part[(part["method"] == method) & (part["structure"] == s) &
                           (part["site"].isna() if site is None else part["site"] == site)]
                if hit.empty:
                    row.append("–"); b.append(False); d.append(False)
                    continue
                h = hit.iloc[0]
                row.append(format_cell(h["mean"], h["std"], scale))
                b.append(bool(h["is_best"]))
                d.append(bool(h["significant"]))
            rows.append(row); bold.append(b); dagger.append(d)
        better = "lower" if metric in ("hd95", "assd") else "higher"
        caption = (f"{dataset}, assignment {assignment}: {name} ({better} is better), {seed_text(n_seeds)}; "
                   f"best in bold; {_dagger_text(compared, alpha)}.{shown}")
        tables.append(Table(caption, header, rows, bold, dagger, label=f"tab:{dataset}-{assignment}-{metric}"))
    return tables


def _dagger_text(compared: pd.DataFrame, alpha: float) -> str:
    """What † means here; no † is claimed below MIN_SEEDS_FOR_SIGNIFICANCE seeds (`stats.compare_methods`)."""
    fewest, most = (int(compared["n_seeds"].min()), int(compared["n_seeds"].max())) if len(compared) else (0, 0)
    if most < MIN_SEEDS_FOR_SIGNIFICANCE:
        return (f"no significance marks: they need {MIN_SEEDS_FOR_SIGNIFICANCE} or more seeds per method "
                f"(here {fewest})")
    text = (f"† = significantly worse than the best ({WILCOXON_TEST} paired on test cases averaged over seeds, "
            f"p < {alpha})")
    if fewest < MIN_SEEDS_FOR_SIGNIFICANCE:
        text += f", only between methods that ran {MIN_SEEDS_FOR_SIGNIFICANCE}+ seeds"
    return text


def seed_text(n_seeds: int) -> str:
    """How the cells were formed: no std claimed from a single seed."""
    return "mean ± std over {} seeds".format(n_seeds) if n_seeds > 1 else "one seed (no spread over seeds: std not shown)"


def fairness_table(fair: pd.DataFrame, methods: list[str], references: list[str] = ()) -> Table:
    """Average, worst-site Dice, std across sites and best-minus-worst gap per (dataset, assignment, method);
    `references` (the full-mask bound) are shown but never bold, as in the results tables."""
    header = ["Dataset", "Assignment", "Method", "Average Dice (%)", "Worst-site Dice (%)", "Worst site",
              "Std across sites (%)", "Best - worst (%)"]
    rows, bold = [], []
    for (dataset, assignment), part in fair.groupby(["dataset", "assignment"], sort=False):
        order = [m for m in methods if m in set(part["method"])] + sorted(set(part["method"]) - set(methods))
        part = part.set_index("method")
        competing = competitors(part, references)
        best = {"mean_dice": competing["mean_dice"].max(), "worst_site_dice": competing["worst_site_dice"].max(),
                "site_std": competing["site_std"].min(), "gap": competing["gap"].min()}
        for method in order:
            r = part.loc[method]
            rows.append([dataset, assignment, method] + [format_cell(r[c], r[c + "_std"], 100.0) for c in
                                                         ("mean_dice", "worst_site_dice")]
                        + [str(r["worst_site"])] + [format_cell(r[c], r[c + "_std"], 100.0) for c in ("site_std", "gap")])
            contender = method in competing.index
            flags = [contender and bool(np.isclose(r[c], best[c])) for c in ("mean_dice", "worst_site_dice")]
            flags2 = [contender and bool(np.isclose(r[c], best[c])) for c in ("site_std", "gap")]
            bold.append([False, False, False, *flags, False, *flags2])
    n = int(fair["n_seeds"].max()) if len(fair) else 0
    caption = (f"Fairness across sites: per seed, the mean Dice of each site, then their average, minimum (worst "
               f"site), sample std and best-minus-worst gap; {seed_text(n)}; best in bold"
               + (f" ({', '.join(references)}, trained on full masks, is the bound: never bold)." if references else "."))
    return Table(caption, header, rows, bold, [[False] * len(header) for _ in rows], label="tab:fairness")


def efficiency_table(ratios: pd.DataFrame, methods: list[str]) -> Table:
    """Weak-label Dice / full-mask Dice per (dataset, label kind, method): mean ± std over sites."""
    grouped = ratios.groupby(["dataset", "label", "method"])
    summary = grouped["ratio"].agg(["mean", "std", "size"]).join(grouped["reference"].first()).reset_index()
    header = ["Dataset", "Label kind", "Method", "Weak / full Dice", "Sites", "Full-mask reference"]
    rows, bold = [], []
    for (dataset, label), part in summary.groupby(["dataset", "label"], sort=False):
        order = [m for m in methods if m in set(part["method"])] + sorted(set(part["method"]) - set(methods))
        part = part.set_index("method")
        for method in order:
            r = part.loc[method]
            rows.append([dataset, label, method, format_cell(r["mean"], r["std"]), str(int(r["size"])), r["reference"]])
            bold.append([False, False, False, bool(np.isclose(r["mean"], part["mean"].max())), False, False])
    caption = ("Label efficiency: each site's test Dice with the weak label kind divided by the same site's "
               "full-mask Dice (the same method trained on full masks where such a run exists, else "
               "centralized_full); mean ± std over the sites that used the label kind; best per label kind in bold.")
    return Table(caption, header, rows, bold, [[False] * len(header) for _ in rows], label="tab:label-efficiency")


def generalization_table(gen: pd.DataFrame, methods: list[str]) -> Table:
    """Leave-one-site-out: held-out-site Dice and HD95 per (dataset, assignment, method, model)."""
    from fedicra.report.generalization import MODEL_NAMES

    header = ["Dataset", "Assignment", "Method", "Model", "Dice (%)", "Dice std over held-out sites (%)",
              "Worst held-out site Dice (%)", "HD95 (px)", "HD95 std over held-out sites (px)", "Held-out sites"]
    rows, bold = [], []
    for (dataset, assignment), part in gen.groupby(["dataset", "assignment"], sort=False):
        order = {m: i for i, m in enumerate(methods)}
        part = part.assign(_o=part["method"].map(order)).sort_values(["_o", "method", "model"], na_position="last")
        best = {"mean_dice": part["mean_dice"].max(), "worst_site_dice": part["worst_site_dice"].max(),
                "mean_hd95": part["mean_hd95"].min()}
        for _, r in part.iterrows():
            rows.append([dataset, assignment, r["method"], MODEL_NAMES[r["model"]],
                         format_cell(r["mean_dice"], r["mean_dice_seed_std"], 100.0),
                         format_cell(r["mean_dice_site_std"], None, 100.0), format_cell(r["worst_site_dice"], None, 100.0),
                         format_cell(r["mean_hd95"], r["mean_hd95_seed_std"]), format_cell(r["mean_hd95_site_std"], None),
                         str(int(r["held_out_sites"]))])
            bold.append([False] * 4 + [bool(np.isclose(r["mean_dice"], best["mean_dice"])), False,
                                       bool(np.isclose(r["worst_site_dice"], best["worst_site_dice"])),
                                       bool(np.isclose(r["mean_hd95"], best["mean_hd95"])), False, False])
    n = int(gen["n_seeds"].max()) if len(gen) else 0
    caption = ("Unseen-site generalization (leave-one-site-out): each site in turn is held out of training and "
               "scored on its test set as a new site that never trained; `global` = the server's global model "
               "(the pooled model for centralized methods), `best available` = the new site's model after the "
               "method's own receipt of the server's final payload, with no local training (docs/report.md); "
               f"Dice and HD95: mean over held-out sites and seeds ± std over seeds of the per-seed mean; {seed_text(n)}; "
               "best in bold. Methods that share nothing with a new site (local) have no row.")
    return Table(caption, header, rows, bold, [[False] * len(header) for _ in rows], label="tab:generalization")


def convergence_table(runs: pd.DataFrame, methods: list[str]) -> Table:
    """Per run: the validation Dice gained over the last quarter of rounds and the resulting flag."""
    from fedicra.report.diagnostics import CONVERGED_ALPHA, CONVERGED_GAIN, MIN_TEST_ROUNDS, convergence_flags

    header = ["Dataset", "Assignment", "Method", "Seed", "Rounds", "Val. Dice gain, last quarter (%)", "p",
              "Val. peak round", "Largest site gain (%)", "Status"]
    order = {m: i for i, m in enumerate(methods)}
    part = runs.assign(_o=runs["method"].map(order), _flag=convergence_flags(runs))
    part = part.sort_values(["dataset", "assignment", "_o", "method", "seed"])
    rows = [[r["dataset"], r["assignment"], r["method"], str(r["seed"]), str(r["rounds"]),
             _num(r["convergence_gain"] * 100.0, 2), _num(r["convergence_p"], 3), _num(r["val_peak_round"], 0),
             f"{r['rising_site']} {_num(r['rising_site_gain'] * 100.0, 2)}" if np.isfinite(r["rising_site_gain"]) else "–",
             r["_flag"]]
            for _, r in part.iterrows()]
    flags = [[False] * len(header) for _ in rows]
    caption = (f"Convergence per run: validation mean Dice (mean over sites), mean over the last quarter of the "
               f"evaluated rounds minus mean over the quarter before it; p: one-sided Welch t-test that the last "
               f"quarter is higher. A gain above {CONVERGED_GAIN * 100:g} Dice points with p < {CONVERGED_ALPHA:g} (or "
               f"fewer than {MIN_TEST_ROUNDS} evaluated rounds per quarter to test) means the run was still improving "
               "when it stopped (not converged). Val. peak round: the round of the highest validation mean Dice; a peak "
               "long before the last round says the run declined after it (e.g. over-fit its sparse labels). Largest site "
               "gain: the site whose own validation Dice gained most over the same two quarters (the mean over sites "
               "can hide one site still learning while another declines).")
    return Table(caption, header, rows, flags, [r[:] for r in flags], label="tab:convergence")


def cost_table(runs: pd.DataFrame, dataset: str, assignment: str, methods: list[str]) -> Table:
    """Gradient steps per site, communication, wall-clock and memory per method (mean over seeds)."""
    part = runs[(runs["dataset"] == dataset) & (runs["assignment"] == assignment)]
    means = part.groupby("method")[["mb_per_round", "wall_clock_s", "peak_rss_mb", "peak_gpu_mb"]].mean()
    steps = part.groupby("method").agg(low=("gradient_steps_min", "min"), high=("gradient_steps_max", "max"))
    order = [m for m in methods if m in means.index] + sorted(set(means.index) - set(methods))
    header = ["Method", "Gradient steps per site", "MB per round (up+down)", "Wall-clock (min)", "Peak RSS (MB)",
              "Peak GPU (MB)"]
    rows = []
    for method in order:
        m, low, high = means.loc[method], int(steps.loc[method, "low"]), int(steps.loc[method, "high"])
        rows.append([method, str(low) if low == high else f"{low}–{high}", _num(m["mb_per_round"], 3),
                     _num(m["wall_clock_s"] / 60.0, 2), _num(m["peak_rss_mb"], 0), _num(m["peak_gpu_mb"], 0)])
    flags = [[False] * len(header) for _ in rows]
    return Table(f"{dataset}, assignment {assignment}: cost per run (mean over seeds).", header, rows,
                 flags, [r[:] for r in flags], label=f"tab:{dataset}-{assignment}-cost")


def ranking_table(result: RankingResult) -> Table:
    """Average Friedman ranks (1 = best) with the Nemenyi critical difference in the caption."""
    header = ["Method", "Average rank"]
    rows = [[m, f"{r:.2f}"] for m, r in result.ranks.items()]
    best = result.ranks.min()
    bold = [[False, bool(np.isclose(r, best))] for r in result.ranks]
    caption = (f"Average rank of mean Dice over {result.matrix.shape[0]} (dataset, site) blocks. Friedman "
               f"chi² = {result.statistic:.2f}, p = {result.pvalue:.3g}; Nemenyi critical difference "
               f"CD = {result.critical_difference:.2f} at alpha = {result.alpha}.")
    if result.dropped_methods:
        caption += f" Left out (missing blocks): {', '.join(result.dropped_methods)}."
    return Table(caption, header, rows, bold, [[False, False] for _ in rows], label="tab:ranking")


SELECTION_LABELS = {"last": "Last round", "best_val": "Best on validation",
                    "best_test": "Best on test (optimistic)", "best_val - last": "Best on validation - last"}


def selection_table(effect: pd.DataFrame, methods: list[str], model: str, selection: str) -> Table:
    """Average test Dice per (dataset, assignment, method) under each round selection
    (`diagnostics.selection_effect`), and how much best-on-validation gains over the last round."""
    # unstack, not pivot_table: a std over one seed is NaN and must stay a column (shown as no spread)
    wide = effect.set_index(["dataset", "assignment", "method", "column", "quantity"])["value"].unstack(
        ["column", "quantity"])
    columns = [c for c in SELECTION_LABELS if c in wide.columns.get_level_values("column")]
    header = ["Dataset", "Assignment", "Method"] + [SELECTION_LABELS[c] + " (%)" for c in columns]
    order = {m: i for i, m in enumerate(methods)}
    keys = sorted(wide.index, key=lambda k: (k[0], k[1], order.get(k[2], len(order)), k[2]))
    rows = [[*key] + [format_cell(wide.loc[key, (c, "mean")], wide.loc[key, (c, "std")], 100.0) for c in columns]
            for key in keys]
    n = int(wide.xs("n_seeds", axis=1, level="quantity").max().max()) if len(wide) else 0
    caption = (f"Model selection: average test Dice of the {model} model (per seed the mean over sites, then "
               f"{seed_text(n)}) when each site's model is taken at the last round, at its best validation round, "
               "and, where recorded, at its best test round (optimistic: it selects on the test set). A large "
               "gain of best-on-validation over the last round means the model declined late in training (e.g. "
               "over-fit its sparse labels), so a ranking can depend on the selection rule; the results tables "
               f"use `{selection}`.")
    flags = [[False] * len(header) for _ in rows]
    return Table(caption, header, rows, flags, [r[:] for r in flags], label="tab:selection")


def _num(value: float, digits: int) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def to_markdown(table: Table) -> str:
    lines = [f"*{table.caption}*", "", "| " + " | ".join(table.header) + " |",
             "|" + "|".join(["---"] + [":-:"] * (len(table.header) - 1)) + "|"]
    for row, bold, dagger in zip(table.rows, table.bold, table.dagger):
        cells = []
        for text, b, d in zip(row, bold, dagger):
            text = f"**{text}**" if b else text
            cells.append(text + ("†" if d else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _tex_escape(text: str) -> str:
    for char, repl in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                       ("²", r"$^2$")):
        text = text.replace(char, repl)
    return text


def to_latex(table: Table) -> str:
    """A booktabs `table` environment (needs \\usepackage{booktabs})."""
    caption = _tex_escape(table.caption).replace("†", r"$^{\dagger}$").replace("±", r"$\pm$")
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\caption{" + caption + "}",
             rf"\label{{{table.label}}}", r"\begin{tabular}{l" + "c" * (len(table.header) - 1) + "}", r"\toprule",
             " & ".join(_tex_escape(h) for h in table.header) + r" \\", r"\midrule"]
    for row, bold, dagger in zip(table.rows, table.bold, table.dagger):
        cells = []
        for text, b, d in zip(row, bold, dagger):
            text = _tex_escape(text).replace("±", r"$\pm$").replace("–", "--")
            text = rf"\textbf{{{text}}}" if b else text
            cells.append(text + (r"$^{\dagger}$" if d else ""))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
