"""The run record (fedicra.record): real runs and fakes follow it, `report check` names the first problem."""
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from fedicra import record
from fedicra.report import collect
from fedicra.report.__main__ import main as report_main
from fedicra.report.fake_runs import write_fake_run

CONTRACTS = Path(__file__).resolve().parents[1] / "docs" / "contracts.md"


def _one_run(real_runs, tmp_path, method="fedavg"):
    run = tmp_path / "runs" / "faz32" / "upstream" / method / "seed0"
    shutil.copytree(real_runs / "faz32" / "upstream" / method / "seed0", run)
    return run


def test_real_runs_follow_the_record(real_runs, capsys):
    assert report_main(["check", str(real_runs)]) == 0
    assert capsys.readouterr().out.count("ok ") == 2
    run = real_runs / "faz32" / "upstream" / "fedavg" / "seed0"
    summary = record.read_summary(run)
    cases = record.read_cases(run, expected_rows=summary["num_cases"])
    assert list(cases.columns[:len(record.CASE_COLUMNS)]) == list(record.CASE_COLUMNS)
    rounds = record.read_rounds(run)
    assert list(rounds.columns[:len(record.ROUND_COLUMNS)]) == list(record.ROUND_COLUMNS)
    env = summary["environment"]
    assert env["device"] == "cpu" and env["precision"] == "fp32" and env["packages"]["torch"].startswith("2.13")
    # a method with nothing personal has global rows; `local` (all personal) has none
    assert "global" in set(cases["model"])
    local = record.read_cases(real_runs / "faz32" / "upstream" / "local" / "seed0")
    assert set(local["model"]) == {"personalized"}
    assert [s["site"] for s in record.read_samples(run)] == [0, 1]
    assert not list(run.glob("predictions.npz")), "no server-side copy of the sites' images"


def test_fakes_look_like_real_runs(real_runs, tmp_path):
    fake = write_fake_run(tmp_path / "d" / "a" / "fedavg" / "seed0", rounds=2, num_sites=2)
    real = real_runs / "faz32" / "upstream" / "fedavg" / "seed0"
    record.check(fake)
    for reader in (record.read_cases, record.read_rounds):
        assert list(reader(fake).columns) == list(reader(real).columns), reader.__name__
    assert set(record.read_config(fake)) == set(record.read_config(real))
    fake_summary, real_summary = record.read_summary(fake), record.read_summary(real)
    assert set(fake_summary) == set(real_summary)
    assert set(fake_summary["environment"]) == set(real_summary["environment"])
    assert set(fake_summary["protocol"]) <= set(real_summary["protocol"])
    assert write_fake_run(tmp_path / "d" / "a" / "local" / "seed0", method="local", global_model=False)
    assert set(record.read_cases(tmp_path / "d" / "a" / "local" / "seed0")["model"]) == {"personalized"}


@pytest.mark.parametrize("damage, message", [
    (lambda run: (run / record.SUMMARY).unlink(), r"incomplete run \(no summary.json\)"),
    (lambda run: pd.read_csv(run / record.CASES).drop(columns=["selection"]).to_csv(run / record.CASES, index=False),
     "cases.csv: missing column selection"),
    (lambda run: pd.read_csv(run / record.ROUNDS).drop(columns=["train_loss"]).to_csv(run / record.ROUNDS, index=False),
     "rounds.csv: missing column train_loss"),
    (lambda run: (run / record.CASES).write_text("".join((run / record.CASES).read_text().splitlines(True)[:-3])),
     "cases.csv: .* rows but summary.json records num_cases"),
    (lambda run: (run / record.CASES).write_text((run / record.CASES).read_text()[:-20]), "cases.csv: truncated"),
    (lambda run: (run / record.SUMMARY).write_text(json.dumps({**json.loads((run / record.SUMMARY).read_text()),
                                                               "num_cases": "many"})), "num_cases"),
])
def test_check_names_the_first_problem_in_one_line(real_runs, tmp_path, capsys, damage, message):
    run = _one_run(real_runs, tmp_path)
    damage(run)
    assert report_main(["check", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and re.search(message, err), err
    # the report refuses the run too, instead of averaging over fewer sites or dropping it
    with pytest.raises(record.RecordError, match=message):
        collect.collect(collect.find_runs(tmp_path / "runs"))


def test_contracts_doc_matches_the_record_module():
    text = CONTRACTS.read_text(encoding="utf-8")
    runs = text[text.index("## Runs"):]
    runs = runs[:runs.index("\n## ", 1)]
    names = [record.CONFIG, record.ROUNDS, record.CASES, record.SUMMARY, f"{record.SAMPLES}/site<k>.npz", record.CHECKPOINT]
    keys = [*record.ROUND_COLUMNS, *record.CASE_COLUMNS, *record.SUMMARY_SCHEMA["required"],
            *record.ENVIRONMENT_SCHEMA["required"], *record.SAMPLE_KINDS, *record.MODELS, *record.SELECTIONS,
            *record.MEANS, *(f"{m}_<s>" for m in record.METRICS)]
    missing = [k for k in names + keys if f"`{k}`" not in runs and not re.search(rf"[`{{,\s]{re.escape(k)}[`{{}},\s]", runs)]
    assert not missing, f"docs/contracts.md 'Runs' does not name {missing}"


def test_deployment_reads_the_current_round_through_the_record(tmp_path):
    from fedicra.fl.backends.deployment import current_round

    assert current_round(tmp_path) == 1                      # no rounds.csv yet
    rows = [{"round": r, "site": s, "train_loss": 0.5, "seconds": 1.0, "bytes_up": 1, "bytes_down": 1}
            for r in (1, 2) for s in (-1, 0)]
    record.write_rounds(tmp_path, rows)
    assert current_round(tmp_path) == 3
    path = tmp_path / record.ROUNDS
    path.write_text(path.read_text()[:-3])                    # a torn last line: unreadable, not a crash
    assert current_round(tmp_path) == 1
