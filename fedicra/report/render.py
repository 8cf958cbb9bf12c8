"""The paper-style `report.md`: setup, protocol statement, tables, figures and environment.

Everything is read from the runs themselves (config.json, summary.json, cases.csv) so the report
describes what was run, not what a config file hoped for.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

import pandas as pd

from fedicra.fl.config import train_schema
from fedicra.report import diagnostics, fairness
from fedicra.report.build import ReportOptions, combos, method_order, primary_assignment, table_stem
from fedicra.report.collect import Collected
from fedicra.report.io import atomic_write_text
from fedicra.report.stats import MIN_SEEDS_FOR_SIGNIFICANCE, WILCOXON_TEST, natural_key, select_protocol

MODEL_TEXT = {
    "personalized": "the **personalized** model of each site (its own personal parameters), scored on that site's own test set",
    "global": "the **global** (server-aggregated) model, scored on every site's test set",
}
SELECTION_TEXT = {
    "last": "the model after the **last** round (`last`)",
    "best_val": ("the round with the best mean Dice on a **validation split held out from the training cases** "
                 "(`best_val`; the test set is never used for selection)"),
    "best_test": ("the round with the best **test** Dice (`best_test`, upstream FedICRA's protocol; optimistic, "
                  "shown only for comparison with the paper)"),
}


def _values(series) -> str:
    vals = sorted({str(v) for v in series if v is not None and not (isinstance(v, float) and pd.isna(v))},
                  key=natural_key)
    return ", ".join(vals) if vals else "–"


def protocol_statement(collected: Collected, opts: ReportOptions) -> str:
    faithful = {bool(v) for v in collected.runs["faithful"].dropna()}
    if faithful == {True}:
        mode = ("**faithful** mode (upstream FedICRA behaviour reproduced, including its known quirks; "
                "see docs for the list)")
    elif faithful == {False}:
        mode = "**intended** mode (upstream bugs fixed; the `faithful` switch was off)"
    elif faithful:
        mode = "a **mix** of faithful and intended runs (see the runs table)"
    else:
        mode = "an unrecorded faithful/intended mode"
    protocols = [json.loads(p) for p in collected.runs["protocol"]]
    keys = sorted({k for p in protocols for k in p})
    details = "; ".join(f"`{k}` = {_values(json.dumps(p.get(k), sort_keys=True) for p in protocols)}" for k in keys)
    return (f"Every number in the tables is a test score of {MODEL_TEXT[opts.model]}, taken at "
            f"{SELECTION_TEXT[opts.selection]}. Training ran in {mode}. Significance: {WILCOXON_TEST} "
            f"against the best method of each column (best among the methods trained on the assigned labels: a "
            f"full-mask bound such as `centralized_full` is shown but neither bold nor tested), paired on test cases "
            f"(each averaged over seeds), alpha = {opts.alpha}, "
            f"no multiple-comparison correction. Recorded run protocol: {details or '–'}.")


def _train_settings(configs: list[dict]) -> list[str]:
    """Every run option of the run schema: one line each where a run departs from the default, the rest named once."""
    lines, at_default = [], []
    for key, spec in train_schema()["properties"].items():
        values = [c.get(key, spec.get("default")) for c in configs]
        if all(v == spec.get("default") for v in values):
            at_default.append(f"`{key}`")
        else:
            lines.append(f"- `{key}`: {_values(_shown(v) for v in values)}")
    if at_default:
        lines.append(f"- at the run schema's defaults: {', '.join(at_default)}")
    return lines


def _shown(value):
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value


def _setup(collected: Collected, opts: ReportOptions) -> list[str]:
    runs, cases = collected.runs, collected.cases
    configs = [json.loads(c) for c in runs["config"]]
    lines = ["## Setup", "", f"{len(runs)} runs: {runs['dataset'].nunique()} dataset(s) x "
             f"{runs['assignment'].nunique()} annotation assignment(s) x {runs['method'].nunique()} method(s) x "
             f"{runs['seed'].nunique()} seed(s). Every number in a table is available in `tables/numbers.csv`.", "",
             "| dataset | assignment | sites (training label kind) | test cases per site |", "|---|---|---|---|"]
    for dataset, assignment in combos(collected):
        part = cases[(cases["dataset"] == dataset) & (cases["assignment"] == assignment)]
        labels = diagnostics.assignment_rows(part).drop_duplicates("site_name").set_index("site_name")["label"]
        counts = part.groupby("site_name")["case"].nunique()
        sites = sorted(labels.index, key=natural_key)
        lines.append(f"| {dataset} | {assignment} | {', '.join(f'{s} ({labels[s]})' for s in sites)} | "
                     f"{', '.join(str(counts[s]) for s in sites)} |")
    if full_mask := diagnostics.full_mask_methods(cases):
        lines += ["", f"{', '.join(f'`{m}`' for m in full_mask)} trained on full masks at every site, whatever "
                  "the assignment (the label kinds above are the other methods')."]
    lines += ["", f"Methods: {', '.join(method_order(collected, opts))}.", "", "Training settings (from each run's config.json):", ""]
    lines += _train_settings(configs)
    params = {m: c.get("method_params") for m, c in zip(runs["method"], configs) if c.get("method_params")}
    for method, value in sorted(params.items()):
        lines.append(f"- `{method}` parameters: `{json.dumps(value, sort_keys=True)}`")
    return lines + [""]


def _environment(collected: Collected) -> list[str]:
    runs = collected.runs
    envs = [json.loads(e) for e in runs["environment"]]
    lines = ["## Environment", "", "Values recorded by the runs (all distinct values are listed):", "",
             f"- device used: {_values(runs['device'])} (requested: {_values(e.get('device_requested') for e in envs)})",
             f"- GPU model: {_values(runs['gpu'].dropna()) if runs['gpu'].notna().any() else 'none (CPU runs)'}"]
    if any("precision" not in e for e in envs):
        lines.append(f"- precision: {_values(runs['precision'])} (some runs did not record it: fp32 assumed)")
    else:
        lines.append(f"- precision: {_values(runs['precision'])}")
    total_h = runs["wall_clock_s"].sum() / 3600.0
    lines += [f"- wall time: {total_h:.2f} h of training over {len(runs)} runs "
              f"(per run {runs['wall_clock_s'].min():.0f} to {runs['wall_clock_s'].max():.0f} s)"]
    for key in sorted({k for e in envs for k in e} - {"packages", "device", "device_requested", "gpu", "precision"}):
        lines.append(f"- `{key}`: {_values(e.get(key) for e in envs)}")
    packages = sorted({k for e in envs for k in (e.get("packages") or {})})
    lines += [f"- `{name}`: {_values((e.get('packages') or {}).get(name) for e in envs)}" for name in packages]
    return lines + [""]


def _warnings(collected: Collected, opts: ReportOptions) -> list[str]:
    """Banners a reader must see before the tables: unconverged runs, a beaten bound, no-effect methods."""
    runs, lines = collected.runs, []
    flags = diagnostics.convergence_flags(runs)
    late = runs[flags == "not converged"]
    if len(late):
        lines.append(f"> **Not converged: {len(late)} of {len(runs)} runs**: their validation Dice gained more than "
                     f"{diagnostics.CONVERGED_GAIN * 100:g} points over the last quarter of the rounds (beyond noise "
                     f"where a quarter has {diagnostics.MIN_TEST_ROUNDS}+ rounds to test; see the convergence table), "
                     "so they may still have been improving. A run whose learning rate decays to zero can also gain "
                     "late without more rounds helping; only the same runs at another budget tell the two apart "
                     "(`benchmarks/budget_doubling.py`). This report is a quick look, not a result: use a converged "
                     "configuration (e.g. `config/converged.yaml`) for conclusions.")
    unknown = int((flags == "unknown (no validation split)").sum())
    if unknown:
        lines.append(f"> {unknown} runs have no validation split (val_fraction 0): their convergence cannot be "
                     "judged and only the `last` selection exists.")
    n_seeds = runs.groupby(["dataset", "assignment", "method"])["seed"].nunique().min()
    if n_seeds < 3:
        lines.append(f"> Only {n_seeds} seed(s) per method: spreads are {'not available' if n_seeds < 2 else 'rough'}"
                     f" and the results tables claim no significance below {MIN_SEEDS_FOR_SIGNIFICANCE} seeds.")
    cases = select_protocol(collected.cases, opts.model, opts.selection)
    for hit in diagnostics.beats_upper_bound(cases):
        lines.append(f"> **Upper bound beaten:** {hit['method']} exceeds `{diagnostics.UPPER_BOUND}` on "
                     f"{hit['dataset']} / {hit['assignment']} by {hit['margin'] * 100:.2f} Dice points, more than the "
                     f"seed spread ({hit['spread'] * 100:.2f}): the bound is not trained to its potential.")
    for a, b in diagnostics.identical_methods(collected.cases):
        lines.append(f"> **Identical numbers:** `{a}` and `{b}` have the same score on every test case: the "
                     "mechanism that distinguishes them had no measurable effect in these runs.")
    return [line for item in lines for line in (item, "")]


def _trades(collected: Collected, opts: ReportOptions) -> list[str]:
    table = fairness.fairness_table(select_protocol(collected.cases, opts.model, opts.selection))
    found = fairness.trades(table)
    if not found:
        return [f"No method buys a better average with a worse worst site (margin {fairness.TRADE_MARGIN * 100:g} "
                "Dice points).", ""]
    lines = ["Methods that trade the worst site for the average:", ""]
    lines += [f"- {t['dataset']} / {t['assignment']}: `{t['method']}` beats `{t['over']}` on average by "
              f"{t['average_gain'] * 100:.2f} points but its worst site is {t['worst_site_loss'] * 100:.2f} points lower"
              for t in found]
    return lines + [""]


def _figure(path: Path, base: Path, alt: str) -> str:
    return f"![{alt}]({os.path.relpath(path, base)})"


def resolved_statement(collected: Collected) -> list[str]:
    """What each method used where upstream states a constant in iterations, rounds or pixels (each run's
    `config.json` `resolved`: run-relative schedule values, CRF window, objective, gradient steps per site),
    one line per method with every distinct value over its runs."""
    per_method: dict[str, dict[str, list]] = {}
    for method, config in zip(collected.runs["method"], collected.runs["config"]):
        resolved = json.loads(config).get("resolved") or {}
        flat = {**{k: v for k, v in resolved.items() if k != "method_params"}, **(resolved.get("method_params") or {})}
        for key, value in flat.items():
            per_method.setdefault(method, {}).setdefault(key, []).append(_shown(value))
    if not per_method:
        return []
    lines = ["Resolved values (what each method used where upstream states a constant in iterations, rounds or "
             "pixels, scaled to this run in intended mode; each run's `config.json` `resolved`; all distinct values "
             "over its runs):", ""]
    for method in sorted(per_method):
        lines.append(f"- `{method}`: " + "; ".join(f"`{k}` {_values(v)}" for k, v in sorted(per_method[method].items())))
    return lines + [""]


def render_report(collected: Collected, opts: ReportOptions, out: Path, tables_dir: Path, figures_dir: Path,
                  title: str | None = None) -> Path:
    """Write report.md that embeds the Markdown tables and links the PNG figures."""
    out = Path(out)
    base = out.parent
    primary = primary_assignment(collected, opts)
    lines = [f"# {title or 'Personalized federated weakly-supervised segmentation benchmark'}: `{opts.name}`", "",
             f"Generated {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by "
             "`fedicra report render` from the run directories; rerun the workflow to refresh.", ""]
    lines += _warnings(collected, opts)
    lines += _setup(collected, opts)
    lines += ["## Evaluation protocol", "", protocol_statement(collected, opts), ""]
    lines += resolved_statement(collected)
    lines += ["## Results", ""]
    for dataset, assignment in combos(collected):
        stem = table_stem(dataset, assignment)
        lines += [f"### {dataset}, assignment `{assignment}`", "",
                  (Path(tables_dir) / f"{stem}.md").read_text(encoding="utf-8"), "",
                  _figure(Path(figures_dir) / f"{stem}_per_site_dice.png", base, f"per-site Dice, {dataset}"), "",
                  _figure(Path(figures_dir) / f"{stem}_val_curve.png", base, f"validation Dice, {dataset}"), "",
                  f"LaTeX: `{os.path.relpath(Path(tables_dir) / f'{stem}.tex', base)}`.", ""]
    lines += [f"## Ranking across datasets and sites (assignment `{primary}`)", "",
              (Path(tables_dir) / "ranking.md").read_text(encoding="utf-8"), "",
              _figure(Path(figures_dir) / "cd_diagram.png", base, "critical-difference diagram"), ""]
    lines += _trades(collected, opts)
    lines += ["## Fairness across sites", "", (Path(tables_dir) / "fairness.md").read_text(encoding="utf-8"), ""]
    for dataset, assignment in combos(collected):
        lines += [_figure(Path(figures_dir) / f"{table_stem(dataset, assignment)}_fairness.png", base,
                          f"fairness, {dataset} {assignment}"), ""]
    lines += ["## Label efficiency", "", (Path(tables_dir) / "label_efficiency.md").read_text(encoding="utf-8"), "",
              _figure(Path(figures_dir) / "label_efficiency.png", base, "label efficiency"), ""]
    lines += ["## Dice by annotation type", ""]
    cases = select_protocol(collected.cases, opts.model, opts.selection)
    if diagnostics.separates_label_kind(cases):
        lines += ["Mean test Dice per training label kind, averaged over the sites that used it (each site's "
                  "mean over seeds first), so the label kind's effect is not one site's difficulty.", "",
                  _figure(Path(figures_dir) / "dice_by_annotation.png", base, "Dice by annotation type"), ""]
    else:
        lines += ["Not drawn: in this grid site and label kind are not crossed (each site needs two or more label "
                  "kinds across assignments and each label kind two or more sites), so the figure would only relabel "
                  "sites. A grid with several assignments (e.g. `rotate0` .. `rotate4`) separates them.", ""]
    lines += ["## Unseen-site generalization", "", (Path(tables_dir) / "generalization.md").read_text(encoding="utf-8"), ""]
    lines += ["## Convergence", "", (Path(tables_dir) / "convergence.md").read_text(encoding="utf-8"), ""]
    lines += ["## Model selection", "", (Path(tables_dir) / "selection.md").read_text(encoding="utf-8"), ""]
    lines += ["## Qualitative results", ""]
    for dataset in dict.fromkeys(collected.runs["dataset"]):
        lines += [_figure(Path(figures_dir) / f"{dataset}_qualitative.png", base, f"qualitative, {dataset}"), ""]
    lines += _environment(collected)
    atomic_write_text(out, "\n".join(lines))
    return out
