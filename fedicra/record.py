"""The run record: the one definition of a run directory's files, their columns and keys.

The engine writes a run through these functions, the report reads it through them, test fakes are
built with them, and `fedicra report check RUN_DIR` validates a directory against them.
docs/contracts.md "Runs" is checked against this module by tests/test_record.py.

    config.json          the resolved run configuration (fedicra/fl/config.py RUN_SCHEMA)
    rounds.csv           one row per (round, site); site -1 = the server's totals of the round
    cases.csv            final test scores, one row per (site, case, model, selection); a leave-one-site-out
                         run adds the held-out site's rows (model unseen_global / unseen_personalized)
    summary.json         written last; its presence means the run is complete
    samples/site<k>.npz  written by site k itself (never sent): one test case with its prediction
    checkpoints/federation.pt  resumable state
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from fedicra.atomic import atomic_write
from fedicra.errors import UserError

CONFIG = "config.json"
ROUNDS = "rounds.csv"
CASES = "cases.csv"
SUMMARY = "summary.json"
SAMPLES = "samples"
CHECKPOINT = "checkpoints/federation.pt"

# Metric columns repeat per structure (`dice_faz`, `dice_cup`, ...), then the means over structures.
METRICS = ("dice", "hd95", "assd", "jaccard")
MEANS = ("mean_dice", "mean_hd95")
ROUND_COLUMNS = ("round", "site", "train_loss", "seconds", "bytes_up", "bytes_down")
CASE_COLUMNS = ("site", "site_name", "label", "case", "model", "selection", "round")
CASE_TEXT = {"case": str, "site_name": str, "label": str, "model": str, "selection": str}
UNSEEN_GLOBAL, UNSEEN_PERSONALIZED = "unseen_global", "unseen_personalized"   # the held-out site (fedicra.fl.holdout)
MODELS = ("personalized", "global", UNSEEN_GLOBAL, UNSEEN_PERSONALIZED)
SELECTIONS = ("last", "best_val", "best_test")
CONFIG_KEYS = ("dataset", "method", "seed", "rounds", "val_fraction", "faithful", "device", "backend", "resolved")
SAMPLE_KINDS = ("image", "mask", "train_image", "train_label", "prediction")

_number = {"type": "number"}
_count = {"type": "integer", "minimum": 0}
ENVIRONMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["python", "platform", "packages", "git_revision", "device", "gpu", "precision"],
    "properties": {
        "python": {"type": "string"}, "platform": {"type": "string"},
        "packages": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
        "git_revision": {"type": ["string", "null"]},
        "device": {"type": "string", "description": "the device the run used (resolved, never 'auto')"},
        "device_requested": {"type": "string"},
        "gpu": {"type": ["string", "null"]},
        "precision": {"type": "string"},
        "cuda_visible_devices": {"type": ["string", "null"]}, "cpu_count": {"type": ["integer", "null"]},
    },
}
SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["wall_clock_s", "rounds_wall_clock_s", "checkpoint_wall_clock_s", "peak_rss_mb", "peak_gpu_mb",
                 "rounds", "gradient_steps", "bytes_up", "bytes_down", "bytes_per_round", "num_cases", "protocol", "environment"],
    "properties": {
        "wall_clock_s": _number, "rounds_wall_clock_s": _number, "checkpoint_wall_clock_s": _number,
        "peak_rss_mb": _number,
        "peak_gpu_mb": {"type": ["number", "null"]}, "rounds": {"type": "integer", "minimum": 1},
        "bytes_up": _count, "bytes_down": _count, "bytes_per_round": _number,
        "num_cases": {"type": "integer", "minimum": 1, "description": "rows of cases.csv"},
        "gradient_steps": {"type": "object", "additionalProperties": _count,
                           "description": "optimizer steps taken per site (client key) over the run"},
        "protocol": {"type": "object", "required": ["method", "models", "selection", "faithful"]},
        "environment": ENVIRONMENT_SCHEMA,
    },
}


class RecordError(UserError):
    """A run directory that does not follow the record (the message names the file and the problem)."""


# ---------------------------------------------------------------------------------------------- paths
def samples_path(run_dir: Path, site: int) -> Path:
    return Path(run_dir) / SAMPLES / f"site{site}.npz"


def metric_columns(structures: list[str]) -> list[str]:
    return [f"{m}_{s}" for s in structures for m in METRICS] + list(MEANS)


def structures_of(columns) -> list[str]:
    return [c[len("dice_"):] for c in columns if c.startswith("dice_")]


# ---------------------------------------------------------------------------------------------- write
def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    from fedicra.fl.outputs import write_json

    write_json(Path(run_dir) / CONFIG, config)


def write_rounds(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows)
    for column in ROUND_COLUMNS:
        if column not in frame:
            frame[column] = np.nan
    metrics = [c for c in metric_columns(structures_of(frame.columns)) if c in frame]
    rest = [c for c in frame.columns if c not in ROUND_COLUMNS and c not in metrics]  # method metrics
    atomic_write(Path(run_dir) / ROUNDS, frame[list(ROUND_COLUMNS) + metrics + rest].to_csv(index=False))


def write_cases(run_dir: Path, rows: list[dict[str, Any]]) -> int:
    """Write cases.csv in the record's column order; returns the row count (summary `num_cases`)."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    missing = [c for c in CASE_COLUMNS if c not in frame]
    if missing or frame.empty:
        raise RecordError(f"{Path(run_dir) / CASES}: no rows or missing columns {', '.join(missing)}")
    metrics = metric_columns(structures_of(frame.columns))
    absent = [c for c in metrics if c not in frame]
    if absent:
        raise RecordError(f"{Path(run_dir) / CASES}: missing column {absent[0]}")
    rest = [c for c in frame.columns if c not in CASE_COLUMNS and c not in metrics]   # further metrics
    atomic_write(Path(run_dir) / CASES, frame[list(CASE_COLUMNS) + metrics + rest].to_csv(index=False))
    return len(frame)


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """Validated first: a summary that breaks the schema must not mark a run complete."""
    import jsonschema

    from fedicra.fl.outputs import write_json

    try:
        jsonschema.validate(summary, SUMMARY_SCHEMA)
    except jsonschema.ValidationError as err:
        raise RecordError(f"{SUMMARY}: {_where(err)}{err.message}") from None
    write_json(Path(run_dir) / SUMMARY, summary)


def write_site_samples(run_dir: Path, site: int, arrays: dict[str, np.ndarray]) -> Path:
    """Site `site`'s own qualitative sample, written where the site runs (see docs/contracts.md)."""
    import io

    missing = [k for k in SAMPLE_KINDS if k not in arrays]
    if missing:
        raise RecordError(f"sample of site {site}: missing {', '.join(missing)}")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: np.asarray(arrays[k]) for k in SAMPLE_KINDS})
    path = samples_path(run_dir, site)
    atomic_write(path, buffer.getvalue())
    return path


# ---------------------------------------------------------------------------------------------- read
def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(f"{path}: missing (the run is incomplete)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RecordError(f"{path}: invalid JSON ({err})") from None
    if not isinstance(value, dict):
        raise RecordError(f"{path}: expected a JSON object")
    return value


def read_config(run_dir: Path) -> dict[str, Any]:
    config = read_json(Path(run_dir) / CONFIG)
    missing = [k for k in CONFIG_KEYS if k not in config]
    if missing:
        raise RecordError(f"{Path(run_dir) / CONFIG}: missing keys {', '.join(missing)}")
    return config


def read_summary(run_dir: Path) -> dict[str, Any]:
    import jsonschema

    path = Path(run_dir) / SUMMARY
    if not path.is_file():
        raise RecordError(f"{run_dir}: incomplete run (no {SUMMARY})")
    summary = read_json(path)
    try:
        jsonschema.validate(summary, SUMMARY_SCHEMA)
    except jsonschema.ValidationError as err:
        raise RecordError(f"{path}: {_where(err)}{err.message}") from None
    return summary


def _read_csv(path: Path, required, dtype=None):
    import pandas as pd

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecordError(f"{path}: missing (the run is incomplete)") from None
    if not text.endswith("\n"):
        raise RecordError(f"{path}: truncated (the last line is incomplete)")
    try:
        import io

        frame = pd.read_csv(io.StringIO(text), dtype=dtype)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise RecordError(f"{path}: unreadable CSV ({str(err).splitlines()[0]})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise RecordError(f"{path}: missing column {missing[0]}")
    return frame


def read_rounds(run_dir: Path):
    frame = _read_csv(Path(run_dir) / ROUNDS, ROUND_COLUMNS)
    if "mean_dice" not in frame:  # no validation split (val_fraction 0): no validation scores
        frame["mean_dice"] = np.nan
    return frame


def read_cases(run_dir: Path, expected_rows: int | None = None):
    path = Path(run_dir) / CASES
    frame = _read_csv(path, CASE_COLUMNS, dtype=CASE_TEXT)
    structures = structures_of(frame.columns)
    if not structures:
        raise RecordError(f"{path}: missing column dice_<structure>")
    missing = [c for c in metric_columns(structures) if c not in frame.columns]
    if missing:
        raise RecordError(f"{path}: missing column {missing[0]}")
    keys = frame[list(CASE_COLUMNS[:6])]
    if keys.isna().any().any():
        raise RecordError(f"{path}: empty key cells in row {int(keys.isna().any(axis=1).to_numpy().argmax()) + 2}")
    bad = sorted(set(frame["model"]) - set(MODELS)) + sorted(set(frame["selection"]) - set(SELECTIONS))
    if bad:
        raise RecordError(f"{path}: unknown model/selection value {bad[0]!r}")
    if expected_rows is not None and len(frame) != expected_rows:
        raise RecordError(f"{path}: {len(frame)} rows but {SUMMARY} records num_cases = {expected_rows} "
                          "(truncated or mixed run)")
    return frame


def read_samples(run_dir: Path) -> list[dict[str, Any]]:
    """Every site's own sample file: dicts with site (index), image, mask, label, train_image, prediction."""
    entries = []
    for path in sorted((Path(run_dir) / SAMPLES).glob("site*.npz"), key=lambda p: _site_index(p)):
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as err:
            raise RecordError(f"{path}: unreadable sample file ({err})") from None
        missing = [k for k in SAMPLE_KINDS if k not in arrays]
        if missing:
            raise RecordError(f"{path}: missing array {missing[0]}")
        entries.append({"site": _site_index(path), **arrays, "label": arrays["train_label"]})
    return entries


def _site_index(path: Path) -> int:
    match = re.fullmatch(r"site(\d+)\.npz", path.name)
    if not match:
        raise RecordError(f"{path}: not a sample file (expected site<k>.npz)")
    return int(match.group(1))


def check(run_dir: Path) -> dict[str, Any]:
    """Validate a run directory; raises RecordError naming the first problem. Returns the summary."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RecordError(f"{run_dir}: not a directory")
    summary = read_summary(run_dir)
    config = read_config(run_dir)
    rounds = read_rounds(run_dir)
    cases = read_cases(run_dir, expected_rows=summary["num_cases"])
    if summary["rounds"] != config["rounds"]:
        raise RecordError(f"{run_dir / SUMMARY}: rounds = {summary['rounds']} but {CONFIG} says {config['rounds']}")
    done = set(rounds.loc[rounds["site"] == -1, "round"])
    if done != set(range(1, config["rounds"] + 1)):
        raise RecordError(f"{run_dir / ROUNDS}: server rows for rounds {sorted(done)[:5]}..., "
                          f"expected 1..{config['rounds']}")
    if "personalized" not in set(cases["model"]):
        raise RecordError(f"{run_dir / CASES}: no personalized rows")
    read_samples(run_dir)
    return summary


def _where(err) -> str:
    where = ".".join(str(p) for p in err.absolute_path)
    return f"{where}: " if where else ""
