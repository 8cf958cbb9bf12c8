"""Read run directories (through `fedicra.record`) into tidy pandas tables.

Three tables come out, each with the run keys `dataset, assignment, method, seed` first:
- cases: one row per (run, site, case, model, selection) with every metric column of cases.csv;
- runs: one row per run with cost and protocol columns from summary.json;
- rounds: one row per (run, round, site) from rounds.csv (validation curves).
The run keys come from the directory path `.../<dataset>/<assignment>/<method>/seed<k>`, because the
method key there may be a variant (e.g. `fedicra-no_contrastive`) that config.json does not name.

A leave-one-site-out run lives at `.../<method>/holdout<h>/seed<k>` (config `holdout_site: h`). It adds
only its held-out site's rows (model `unseen_global` / `unseen_personalized`) to `cases`, the input of
the generalization table (`fedicra.report.generalization`); the scores of its K-1 training sites belong
to no table, and `runs` / `rounds` hold the regular runs alone, so no other table or figure mixes them in.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fedicra import record
from fedicra.errors import UserError

KEYS = ["dataset", "assignment", "method", "seed"]
CASE_COLUMNS = list(record.CASE_COLUMNS)
TEXT_COLUMNS = record.CASE_TEXT   # identifiers that must stay strings (a case named "001" is not 1)
_SEED_DIR = re.compile(r"^seed(\d+)$")
_HOLDOUT_DIR = re.compile(r"^holdout(\d+)$")
UNSEEN_MODELS = (record.UNSEEN_GLOBAL, record.UNSEEN_PERSONALIZED)
_RUN_FILES = (record.SUMMARY, record.CONFIG, record.ROUNDS, record.CASES)


@dataclass
class Collected:
    cases: pd.DataFrame
    runs: pd.DataFrame
    rounds: pd.DataFrame


def run_keys(run_dir: Path) -> dict:
    """(dataset, assignment, method, seed) from the path, and `holdout` (the held-out site, or None)."""
    run_dir = Path(run_dir)
    match = _SEED_DIR.match(run_dir.name)
    holdout = _HOLDOUT_DIR.match(run_dir.parent.name)
    method_dir = run_dir.parent.parent if holdout else run_dir.parent
    if not match or len(method_dir.parts) < 3:
        raise UserError(f"{run_dir}: not a run directory (expected .../<dataset>/<assignment>/<method>/seed<k> "
                        "or .../<method>/holdout<h>/seed<k>)")
    return {"dataset": method_dir.parents[1].name, "assignment": method_dir.parent.name,
            "method": method_dir.name, "seed": int(match.group(1)),
            "holdout": int(holdout.group(1)) if holdout else None}


def is_run_dir(path: Path) -> bool:
    """A `seed<k>` folder holding any run file (complete or not)."""
    path = Path(path)
    return bool(_SEED_DIR.match(path.name)) and any((path / name).is_file() for name in _RUN_FILES)


def find_runs(root: Path) -> list[Path]:
    """Every run directory (`seed<k>` holding any run file) below `root`, sorted. Incomplete runs are
    included on purpose: `load_run` refuses them, so a report never silently averages fewer runs."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: runs folder does not exist")
    return sorted({p.parent for name in _RUN_FILES for p in root.rglob(name) if _SEED_DIR.match(p.parent.name)})


def load_run(run_dir: Path) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """(cases, run row, rounds) of one run directory, validated by `fedicra.record.check` first."""
    from fedicra.report.diagnostics import convergence_gain, convergence_p, largest_site_gain, peak_round

    run_dir = Path(run_dir)
    keys = run_keys(run_dir)
    holdout = keys.pop("holdout")
    summary = record.check(run_dir)
    config = record.read_config(run_dir)
    if config.get("holdout_site") != holdout:
        raise UserError(f"{run_dir / record.CONFIG}: holdout_site = {config.get('holdout_site')} but the folder says "
                        + (f"holdout{holdout}" if holdout is not None else "no held-out site"))
    cases = record.read_cases(run_dir, expected_rows=summary["num_cases"])
    rounds = record.read_rounds(run_dir)
    for frame in (cases, rounds):
        for i, (key, value) in enumerate(keys.items()):
            frame.insert(i, key, value)
    rounds_done = summary["rounds"]
    rising_site, rising_gain = largest_site_gain(rounds)
    site_names = dict(zip(cases["site"], cases["site_name"]))
    environment = summary["environment"]
    run = {
        **keys,
        "run_dir": str(run_dir),
        "base_method": config.get("method", keys["method"]),
        "rounds": rounds_done,
        "local_steps": config.get("local_steps"),
        "val_fraction": config.get("val_fraction"),
        "holdout_site": config.get("holdout_site"),
        "bytes_up": summary["bytes_up"],
        "bytes_down": summary["bytes_down"],
        "mb_per_round": (summary["bytes_up"] + summary["bytes_down"]) / rounds_done / 1e6,
        "wall_clock_s": summary["wall_clock_s"],
        "peak_rss_mb": summary["peak_rss_mb"],
        "peak_gpu_mb": summary["peak_gpu_mb"],
        "num_cases": summary["num_cases"],
        # optimizer steps per trained site (the equal budget; a declared second model doubles it)
        "gradient_steps_min": min(summary["gradient_steps"].values(), default=0),
        "gradient_steps_max": max(summary["gradient_steps"].values(), default=0),
        "device": environment.get("device"),
        "gpu": environment.get("gpu"),
        "precision": environment.get("precision", "fp32"),
        "convergence_gain": convergence_gain(rounds),
        "convergence_p": convergence_p(rounds),
        "val_peak_round": peak_round(rounds),
        "rising_site": site_names.get(rising_site, "" if rising_site is None else str(rising_site)),
        "rising_site_gain": rising_gain,
        "faithful": summary["protocol"].get("faithful", config.get("faithful")),
        "protocol": json.dumps(summary["protocol"], sort_keys=True),
        "environment": json.dumps(environment, sort_keys=True),
        "config": json.dumps(config, sort_keys=True),
    }
    return cases, run, rounds


def collect(run_dirs: list[Path]) -> Collected:
    """Concatenate the given runs into the three tidy tables (leave-one-site-out runs: see the module)."""
    if not run_dirs:
        raise UserError("report collect: no run directories given (no summary.json found)")
    cases, runs, rounds, held_out = [], [], [], []
    for run_dir in run_dirs:
        c, r, rd = load_run(Path(run_dir))
        if r["holdout_site"] is not None:
            cases.append(c[c["model"].isin(UNSEEN_MODELS)])
            held_out.append(r)
            continue
        cases.append(c)
        runs.append(r)
        rounds.append(rd)
    if not runs:
        raise UserError("report collect: only leave-one-site-out runs given; the report needs the regular runs too")
    for rows, keys in ((runs, KEYS), (held_out, KEYS + ["holdout_site"])):
        frame = pd.DataFrame(rows)
        if len(frame) and frame.duplicated(keys).any():
            raise UserError(f"{frame[frame.duplicated(keys)].iloc[0]['run_dir']}: the same "
                            f"({', '.join(keys)}) appears twice")
    runs_frame = pd.DataFrame(runs)
    return Collected(cases=pd.concat(cases, ignore_index=True), runs=runs_frame.sort_values(KEYS, ignore_index=True),
                     rounds=pd.concat(rounds, ignore_index=True))


def save(collected: Collected, out_dir: Path) -> dict[str, Path]:
    """Write cases.csv, runs.csv and rounds.csv into `out_dir` (atomically)."""
    from fedicra.report.io import atomic_write_csv

    out_dir = Path(out_dir)
    paths = {name: out_dir / f"{name}.csv" for name in ("cases", "runs", "rounds")}
    for name, path in paths.items():
        atomic_write_csv(path, getattr(collected, name))
    return paths


def load(out_dir: Path) -> Collected:
    """Read the three tables written by `save`."""
    out_dir = Path(out_dir)
    frames = {}
    for name in ("cases", "runs", "rounds"):
        path = out_dir / f"{name}.csv"
        if not path.is_file():
            raise UserError(f"{path}: missing; run `fedicra report collect` first")
        frames[name] = pd.read_csv(path, dtype={**TEXT_COLUMNS, "dataset": str, "assignment": str, "method": str,
                                                 "rising_site": str})
    return Collected(**frames)
