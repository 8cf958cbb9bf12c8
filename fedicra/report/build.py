"""Turn collected tables into the report's files: tables (.md, .tex) and figures (.png, .pdf).

File names are fixed by (dataset, assignment) so the Snakemake rules can declare them up front:
- tables/<dataset>__<assignment>.{md,tex}: Dice and HD95 tables plus the cost table;
- tables/ranking.{md,tex}: Friedman/Nemenyi average ranks;
- figures/<dataset>__<assignment>_per_site_dice.{png,pdf}, ..._val_curve.{png,pdf};
- figures/<dataset>_qualitative.{png,pdf} (primary assignment, first seed);
- figures/<dataset>__<assignment>_fairness.{png,pdf} (one point per site per method);
- tables/{fairness,label_efficiency,convergence,selection,generalization}.{md,tex}, tables/numbers.csv (every number);
  generalization = leave-one-site-out runs (a note when the grid has none);
- figures/dice_by_annotation.{png,pdf} (drawn only when the grid separates site and label kind),
  figures/label_efficiency.{png,pdf}, figures/cd_diagram.{png,pdf}.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fedicra import record
from fedicra.errors import UserError
from fedicra.report import diagnostics, efficiency, fairness, figures, generalization, tables
from fedicra.report.collect import Collected
from fedicra.report.io import atomic_write_csv, atomic_write_text
from fedicra.report.stats import compare_methods, friedman_nemenyi, select_protocol, structures

# Tables over the whole report (beside the per-(dataset, assignment) ones) and the summary figures.
SUMMARY_TABLES = ("ranking", "fairness", "label_efficiency", "convergence", "selection", "generalization")
SUMMARY_FIGURES = ("dice_by_annotation", "label_efficiency", "cd_diagram")
COMBO_FIGURES = ("per_site_dice", "val_curve", "fairness")
NUMBERS = "numbers.csv"   # every number of the report, long format


@dataclass
class ReportOptions:
    name: str = "report"
    model: str = "personalized"
    selection: str = "best_val"
    alpha: float = 0.05
    methods: list[str] = field(default_factory=list)   # display order; others follow alphabetically
    primary_assignment: str | None = None               # for qualitative panels and the ranking
    metrics: tuple[str, ...] = ("dice", "hd95")

    def __post_init__(self):
        if self.model not in record.MODELS:
            raise UserError(f"report model: '{self.model}' is not one of {', '.join(record.MODELS)}")
        if self.selection not in record.SELECTIONS:
            raise UserError(f"report selection: '{self.selection}' is not one of {', '.join(record.SELECTIONS)}")
        if not 0 < self.alpha < 1:
            raise UserError(f"report alpha: {self.alpha} is not between 0 and 1")


def table_stem(dataset: str, assignment: str) -> str:
    return f"{dataset}__{assignment}"


def primary_assignment(collected: Collected, opts: ReportOptions) -> str:
    present = list(dict.fromkeys(collected.runs["assignment"]))
    if opts.primary_assignment is None:
        return "upstream" if "upstream" in present else present[0]
    if opts.primary_assignment not in present:
        raise UserError(f"report primary_assignment: '{opts.primary_assignment}' has no runs "
                        f"(have {', '.join(present)})")
    return opts.primary_assignment


def combos(collected: Collected) -> list[tuple[str, str]]:
    return list(dict.fromkeys(zip(collected.runs["dataset"], collected.runs["assignment"])))


def ranking(collected: Collected, opts: ReportOptions):
    cases = select_protocol(collected.cases, opts.model, opts.selection)
    cases = cases[cases["assignment"] == primary_assignment(collected, opts)]
    return friedman_nemenyi(cases, alpha=opts.alpha)


def write_tables(collected: Collected, opts: ReportOptions, out_dir: Path) -> list[Path]:
    cases = select_protocol(collected.cases, opts.model, opts.selection)
    out_dir = Path(out_dir)
    written = []
    for dataset, assignment in combos(collected):
        part = cases[(cases["dataset"] == dataset) & (cases["assignment"] == assignment)]
        parts = tables.results_tables(part, dataset, assignment, opts.methods, opts.metrics, opts.alpha)
        parts.append(tables.cost_table(collected.runs, dataset, assignment, opts.methods))
        written += _write_table_pair(parts, out_dir / table_stem(dataset, assignment))
    result = ranking(collected, opts)
    if result is None:
        written += _write_note_pair(out_dir / "ranking", "Ranking not computed: it needs at least 3 methods "
                                                         "present on at least 2 (dataset, site) blocks.")
    else:
        written += _write_table_pair([tables.ranking_table(result)], out_dir / "ranking")
    order = method_order(collected, opts)
    fair = fairness.fairness_table(cases)
    written += _write_table_pair([tables.fairness_table(fair, order, diagnostics.full_mask_methods(cases))],
                                 out_dir / "fairness")
    ratios = efficiency.label_efficiency(cases)
    if ratios.empty:
        written += _write_note_pair(out_dir / "label_efficiency", "Label efficiency not computed: no run trained "
                                    "a site on full masks (assignment `mask` or method `centralized_full`).")
    else:
        written += _write_table_pair([tables.efficiency_table(ratios, order)], out_dir / "label_efficiency")
    written += _write_table_pair([tables.convergence_table(collected.runs, order)], out_dir / "convergence")
    effect = diagnostics.selection_effect(collected.cases, opts.model)
    written += _write_table_pair([tables.selection_table(effect, order, opts.model, opts.selection)],
                                 out_dir / "selection")
    gen = generalization.generalization_table(collected.cases)
    if gen.empty:
        written += _write_note_pair(out_dir / "generalization", GENERALIZATION_OFF)
    else:
        written += _write_table_pair([tables.generalization_table(gen, order)], out_dir / "generalization")
    atomic_write_csv(out_dir / NUMBERS, every_number(collected, opts, cases, fair, ratios, gen, effect))
    return written + [out_dir / NUMBERS]


GENERALIZATION_OFF = ("Unseen-site generalization not computed: the grid has no leave-one-site-out runs "
                      "(set `leave_one_site_out: true` in the workflow config, or `holdout_site` in a run).")


def every_number(collected: Collected, opts: ReportOptions, cases, fair, ratios, gen, effect):
    """One long table (section, dataset, assignment, method, site, quantity, value) of the report's numbers."""
    import pandas as pd

    parts = []
    for dataset, assignment in combos(collected):
        part = cases[(cases["dataset"] == dataset) & (cases["assignment"] == assignment)]
        cmp_ = compare_methods(part, metrics=opts.metrics, alpha=opts.alpha)
        cmp_ = cmp_.assign(dataset=dataset, assignment=assignment, site=cmp_["site"].fillna("average"))
        for quantity in ("mean", "std", "n_seeds", "p_vs_best"):
            parts.append(cmp_.assign(section="results", quantity=cmp_["metric"] + "_" + cmp_["structure"] + "_" + quantity,
                                     value=cmp_[quantity]))
    for column in fairness.COLUMNS:
        for suffix in ("", "_std"):
            parts.append(fair.assign(section="fairness", site="", quantity=column + suffix, value=fair[column + suffix]))
    if not ratios.empty:
        parts.append(ratios.assign(section="label_efficiency", site=ratios["site_name"] + " (" + ratios["label"] + ")",
                                   quantity="ratio", value=ratios["ratio"]))
    if not gen.empty:
        for column in [c for c in gen.columns if c.startswith(generalization.METRICS) or c == "worst_site_dice"]:
            parts.append(gen.assign(section="generalization", site="held-out (" + gen["model"] + ")",
                                    quantity=column, value=gen[column]))
    parts.append(effect.assign(section="selection", site="average",
                               quantity="dice_" + effect["column"].str.replace(" - ", "_minus_") + "_" + effect["quantity"]))
    runs = collected.runs
    for column in ("convergence_gain", "convergence_p", "val_peak_round", "rising_site_gain", "wall_clock_s", "mb_per_round", "peak_rss_mb", "peak_gpu_mb"):
        parts.append(runs.assign(section="runs", site="seed" + runs["seed"].astype(str), quantity=column,
                                 value=runs[column]))
    columns = ["section", "dataset", "assignment", "method", "site", "quantity", "value"]
    return pd.concat([p[columns] for p in parts], ignore_index=True)


def _write_note_pair(stem: Path, note: str) -> list[Path]:
    md, tex = Path(f"{stem}.md"), Path(f"{stem}.tex")
    atomic_write_text(md, note + "\n")
    atomic_write_text(tex, "% " + note + "\n")
    return [md, tex]


def _write_table_pair(parts: list[tables.Table], stem: Path) -> list[Path]:
    md, tex = Path(f"{stem}.md"), Path(f"{stem}.tex")
    atomic_write_text(md, "\n".join(tables.to_markdown(t) for t in parts))
    atomic_write_text(tex, "% generated by `fedicra report tables`; needs \\usepackage{booktabs}\n" +
                      "\n".join(tables.to_latex(t) for t in parts))
    return [md, tex]


def combo_figures(collected: Collected, opts: ReportOptions, dataset: str, assignment: str, out_dir: Path) -> list[Path]:
    """Per-site Dice bars and validation curves of one (dataset, assignment)."""
    cases = select_protocol(collected.cases, opts.model, opts.selection)
    stem = Path(out_dir) / table_stem(dataset, assignment)
    part = cases[(cases["dataset"] == dataset) & (cases["assignment"] == assignment)]
    if part.empty:
        raise UserError(f"report figures: no runs for dataset {dataset}, assignment {assignment}")
    title = f"{dataset} ({assignment})"
    palette, families = colours(collected)
    order = method_order(collected, opts)
    written = figures.per_site_dice(part, order, Path(f"{stem}_per_site_dice"), title, palette)
    rounds = collected.rounds[(collected.rounds["dataset"] == dataset) & (collected.rounds["assignment"] == assignment)]
    written += figures.validation_curves(rounds, order, Path(f"{stem}_val_curve"), title, palette, families)
    per_site = fairness.site_means(part).groupby(["method", "site_name"], as_index=False)["mean_dice"].mean()
    return written + figures.fairness_points(per_site, order, Path(f"{stem}_fairness"), title, palette)


def colours(collected: Collected) -> tuple[dict, dict]:
    """(method -> colour, method -> family) for every method of the report, the same in every figure."""
    bases = dict(zip(collected.runs["method"], collected.runs["base_method"]))
    return figures.method_palette(bases), {m: figures.family_of(b) for m, b in bases.items()}


def qualitative_figure(collected: Collected, opts: ReportOptions, dataset: str, out_dir: Path) -> list[Path]:
    """Qualitative panel of one dataset: primary assignment (else any), lowest seed, every method."""
    primary = primary_assignment(collected, opts)
    runs = collected.runs[(collected.runs["dataset"] == dataset) & (collected.runs["assignment"] == primary)]
    if runs.empty:
        runs = collected.runs[collected.runs["dataset"] == dataset]
    stem = Path(out_dir) / f"{dataset}_qualitative"
    if runs.empty:
        raise UserError(f"report figures: no runs for dataset {dataset}")
    seed = runs["seed"].min()
    seed_runs = runs[runs["seed"] == seed]
    # what each site wrote locally (record.SAMPLES); nothing of it was ever sent to the server
    samples = {m: record.read_samples(Path(d)) for m, d in zip(seed_runs["method"], seed_runs["run_dir"])}
    samples = {m: samples[m] for m in method_order(collected, opts) if samples.get(m)}
    if not samples:
        return _note_figure(stem, f"{dataset}: no site wrote a qualitative sample (Flower backends write them "
                                  "only with node_samples_dir, on the node)")
    dataset_cases = collected.cases[collected.cases["dataset"] == dataset]
    num_classes = len(structures(dataset_cases)) + 1
    site_names = dict(zip(dataset_cases["site"], dataset_cases["site_name"]))
    assignment = seed_runs["assignment"].iloc[0]
    return figures.qualitative_panel(samples, stem, num_classes, f"{dataset} ({assignment}, seed {seed})",
                                     site_names)


LABEL_KIND_NOT_SEPARATED = ("not drawn: in this grid site and label kind are the same factor (each label kind "
                            "is used at one site only); use several assignments, e.g. rotate0..rotate4")


def summary_figures(collected: Collected, opts: ReportOptions, out_dir: Path) -> list[Path]:
    """Dice by annotation type (all runs) and the critical-difference diagram."""
    out_dir = Path(out_dir)
    cases = select_protocol(collected.cases, opts.model, opts.selection)
    palette, _ = colours(collected)
    order = method_order(collected, opts)
    if diagnostics.separates_label_kind(cases):
        written = figures.dice_by_annotation(diagnostics.label_kind_effect(cases), order,
                                             out_dir / "dice_by_annotation", palette)
    else:
        written = _note_figure(out_dir / "dice_by_annotation", LABEL_KIND_NOT_SEPARATED)
    ratios = efficiency.label_efficiency(cases)
    if ratios.empty:
        written += _note_figure(out_dir / "label_efficiency", "label efficiency needs a full-mask run "
                                                              "(assignment mask or centralized_full)")
    else:
        written += figures.label_efficiency(ratios, order, out_dir / "label_efficiency", palette)
    result = ranking(collected, opts)
    if result is None:
        return written + _note_figure(out_dir / "cd_diagram", "critical-difference diagram needs >= 3 methods "
                                                              "on >= 2 (dataset, site) blocks")
    return written + figures.cd_diagram(result, out_dir / "cd_diagram")


def write_figures(collected: Collected, opts: ReportOptions, out_dir: Path) -> list[Path]:
    written = []
    for dataset, assignment in combos(collected):
        written += combo_figures(collected, opts, dataset, assignment, out_dir)
    for dataset in dict.fromkeys(collected.runs["dataset"]):
        written += qualitative_figure(collected, opts, dataset, out_dir)
    return written + summary_figures(collected, opts, out_dir)


def _ordered(present, methods):
    return [m for m in methods if m in present] + sorted(set(present) - set(methods))


def _note_figure(stem: Path, text: str) -> list[Path]:
    """A figure that states why the real one could not be drawn (keeps declared outputs honest)."""
    plt = figures.pyplot()
    fig, ax = plt.subplots(figsize=(6, 1.5))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return figures.save_figure(fig, stem)


def method_order(collected: Collected, opts: ReportOptions) -> list[str]:
    return _ordered(set(collected.runs["method"]), opts.methods)


def expected_outputs(datasets: list[str], assignments: list[str]) -> dict[str, list[str]]:
    """Relative paths `write_tables` / `write_figures` produce for a grid."""
    stems = [table_stem(d, a) for d in datasets for a in assignments]
    tables_ = [f"tables/{s}.{ext}" for s in stems + list(SUMMARY_TABLES) for ext in ("md", "tex")]
    tables_ += [f"tables/{NUMBERS}"]
    figs = [f"figures/{s}_{kind}.{ext}" for s in stems for kind in COMBO_FIGURES for ext in ("png", "pdf")]
    figs += [f"figures/{d}_qualitative.{ext}" for d in datasets for ext in ("png", "pdf")]
    figs += [f"figures/{n}.{ext}" for n in SUMMARY_FIGURES for ext in ("png", "pdf")]
    return {"tables": tables_, "figures": figs}
