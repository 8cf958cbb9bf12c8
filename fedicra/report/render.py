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

from fedicra.report.build import ReportOptions, combos, method_order, primary_assignment, table_stem
from fedicra.report.collect import Collected
from fedicra.report.io import atomic_write_text
from fedicra.report.stats import WILCOXON_TEST, natural_key

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
TRAIN_KEYS = ("rounds", "local_steps", "batch_size", "lr", "eval_every", "val_fraction", "backend", "device")


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
            f"against the best method of each column, paired on seeds and test cases, alpha = {opts.alpha}, "
            f"no multiple-comparison correction. Recorded run protocol: {details or '–'}.")


def _setup(collected: Collected, opts: ReportOptions) -> list[str]:
    runs, cases = collected.runs, collected.cases
    configs = [json.loads(c) for c in runs["config"]]
    lines = ["## Setup", "", f"{len(runs)} runs: {runs['dataset'].nunique()} dataset(s) x "
             f"{runs['assignment'].nunique()} annotation assignment(s) x {runs['method'].nunique()} method(s) x "
             f"{runs['seed'].nunique()} seed(s).", "",
             "| dataset | assignment | sites (training label kind) | test cases per site |", "|---|---|---|---|"]
    first = cases.drop_duplicates(["dataset", "assignment", "site_name", "case"])
    for dataset, assignment in combos(collected):
        part = first[(first["dataset"] == dataset) & (first["assignment"] == assignment)]
        labels = part.drop_duplicates("site_name").set_index("site_name")["label"]
        counts = part.groupby("site_name")["case"].nunique()
        sites = sorted(labels.index, key=natural_key)
        lines.append(f"| {dataset} | {assignment} | {', '.join(f'{s} ({labels[s]})' for s in sites)} | "
                     f"{', '.join(str(counts[s]) for s in sites)} |")
    lines += ["", f"Methods: {', '.join(method_order(collected, opts))}.", "", "Training settings (from each run's config.json):", ""]
    for key in TRAIN_KEYS:
        lines.append(f"- `{key}`: {_values(c.get(key) for c in configs)}")
    params = {m: c.get("method_params") for m, c in zip(runs["method"], configs) if c.get("method_params")}
    for method, value in sorted(params.items()):
        lines.append(f"- `{method}` parameters: `{json.dumps(value, sort_keys=True)}`")
    return lines + [""]


def _environment(collected: Collected) -> list[str]:
    envs = [json.loads(e) for e in collected.runs["environment"]]
    keys = sorted({k for e in envs for k in e})
    lines = ["## Environment", "", "Values recorded by the runs (all distinct values are listed):", ""]
    lines += [f"- `{k}`: {_values(e.get(k) for e in envs)}" for k in keys]
    total_h = collected.runs["wall_clock_s"].sum() / 3600.0
    lines += [f"- total training wall-clock: {total_h:.2f} h over {len(collected.runs)} runs", ""]
    return lines


def _figure(path: Path, base: Path, alt: str) -> str:
    return f"![{alt}]({os.path.relpath(path, base)})"


def render_report(collected: Collected, opts: ReportOptions, out: Path, tables_dir: Path, figures_dir: Path,
                  title: str | None = None) -> Path:
    """Write report.md that embeds the Markdown tables and links the PNG figures."""
    out = Path(out)
    base = out.parent
    primary = primary_assignment(collected, opts)
    lines = [f"# {title or 'Personalized federated weakly-supervised segmentation benchmark'}: `{opts.name}`", "",
             f"Generated {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by "
             "`fedicra report render` from the run directories; rerun the workflow to refresh.", ""]
    lines += _setup(collected, opts)
    lines += ["## Evaluation protocol", "", protocol_statement(collected, opts), ""]
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
    lines += ["## Dice by annotation type", "",
              "Each site's mean test Dice grouped by the label kind it trained with, over all assignments.", "",
              _figure(Path(figures_dir) / "dice_by_annotation.png", base, "Dice by annotation type"), ""]
    lines += ["## Qualitative results", ""]
    for dataset in dict.fromkeys(collected.runs["dataset"]):
        lines += [_figure(Path(figures_dir) / f"{dataset}_qualitative.png", base, f"qualitative, {dataset}"), ""]
    lines += _environment(collected)
    atomic_write_text(out, "\n".join(lines))
    return out
