"""Read run directories (docs/contracts.md "Runs") into tidy pandas tables.

Three tables come out, each with the run keys `dataset, assignment, method, seed` first:
- cases: one row per (run, site, case, model, selection) with every metric column of cases.csv;
- runs: one row per run with cost and protocol columns from summary.json;
- rounds: one row per (run, round, site) from rounds.csv (validation curves).
The run keys come from the directory path `.../<dataset>/<assignment>/<method>/seed<k>`, because the
method key there may be a variant (e.g. `fedicra-no_contrastive`) that config.json does not name.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fedicra.errors import UserError

KEYS = ["dataset", "assignment", "method", "seed"]
CASE_COLUMNS = ["site", "site_name", "label", "case", "model", "selection"]
# identifiers that must stay strings (a case named "001" is not the number 1)
TEXT_COLUMNS = {"case": str, "site_name": str, "label": str, "model": str, "selection": str}
_SEED_DIR = re.compile(r"^seed(\d+)$")


@dataclass
class Collected:
    cases: pd.DataFrame
    runs: pd.DataFrame
    rounds: pd.DataFrame


def run_keys(run_dir: Path) -> dict:
    """(dataset, assignment, method, seed) from the last four path components."""
    run_dir = Path(run_dir)
    match = _SEED_DIR.match(run_dir.name)
    if not match or len(run_dir.parts) < 4:
        raise UserError(f"{run_dir}: not a run directory (expected .../<dataset>/<assignment>/<method>/seed<k>)")
    return {"dataset": run_dir.parents[2].name, "assignment": run_dir.parents[1].name,
            "method": run_dir.parent.name, "seed": int(match.group(1))}


def find_runs(root: Path) -> list[Path]:
    """Every complete run (a directory holding summary.json) below `root`, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: runs folder does not exist")
    return sorted(p.parent for p in root.rglob("summary.json") if _SEED_DIR.match(p.parent.name))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: missing (the run is incomplete)") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from None


def _read_csv(path: Path, required: list[str]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=TEXT_COLUMNS)
    except FileNotFoundError:
        raise UserError(f"{path}: missing (the run is incomplete)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise UserError(f"{path}: unreadable CSV ({str(err).splitlines()[0]})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing columns {', '.join(missing)}")
    return frame


def load_run(run_dir: Path) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """(cases, run row, rounds) of one complete run directory."""
    run_dir = Path(run_dir)
    keys = run_keys(run_dir)
    summary = _read_json(run_dir / "summary.json")
    config = _read_json(run_dir / "config.json")
    cases = _read_csv(run_dir / "cases.csv", CASE_COLUMNS + ["mean_dice"])
    rounds = _read_csv(run_dir / "rounds.csv", ["round", "site", "mean_dice"])
    for frame in (cases, rounds):
        for i, (key, value) in enumerate(keys.items()):
            frame.insert(i, key, value)
    rounds_done = summary.get("rounds") or 0
    bytes_total = (summary.get("bytes_up") or 0) + (summary.get("bytes_down") or 0)
    protocol = summary.get("protocol") or {}
    run = {
        **keys,
        "run_dir": str(run_dir),
        "base_method": config.get("method", keys["method"]),
        "rounds": rounds_done,
        "bytes_up": summary.get("bytes_up"),
        "bytes_down": summary.get("bytes_down"),
        "mb_per_round": bytes_total / rounds_done / 1e6 if rounds_done else float("nan"),
        "wall_clock_s": summary.get("wall_clock_s"),
        "peak_rss_mb": summary.get("peak_rss_mb"),
        "peak_gpu_mb": summary.get("peak_gpu_mb"),
        "faithful": protocol.get("faithful", config.get("faithful")),
        "protocol": json.dumps(protocol, sort_keys=True),
        "environment": json.dumps(summary.get("environment") or {}, sort_keys=True),
        "config": json.dumps(config, sort_keys=True),
    }
    return cases, run, rounds


def collect(run_dirs: list[Path]) -> Collected:
    """Concatenate the given runs into the three tidy tables."""
    if not run_dirs:
        raise UserError("report collect: no run directories given (no summary.json found)")
    cases, runs, rounds = [], [], []
    for run_dir in run_dirs:
        c, r, rd = load_run(Path(run_dir))
        cases.append(c)
        runs.append(r)
        rounds.append(rd)
    runs_frame = pd.DataFrame(runs)
    duplicated = runs_frame.duplicated(KEYS)
    if duplicated.any():
        first = runs_frame[duplicated].iloc[0]
        raise UserError(f"{first['run_dir']}: the same (dataset, assignment, method, seed) appears twice")
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
        frames[name] = pd.read_csv(path, dtype={**TEXT_COLUMNS, "dataset": str, "assignment": str, "method": str})
    return Collected(**frames)
