"""benchmarks/budget_doubling.py on real runs at two budgets: it pairs the same method and seed, and its
change is the difference of the two runs' mean per-case test Dice read through fedicra.record."""
import importlib.util
from pathlib import Path

import pytest

from fedicra import record

REPO = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("budget_doubling", REPO / "benchmarks" / "budget_doubling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def doubled(tiny_faz, tmp_path_factory):
    """fedavg seed 0 at 2 and at 4 rounds x 2 local steps, in two results folders."""
    from fedicra.fl.config import load_config
    from fedicra.fl.runner import run_experiment

    roots = []
    for rounds in (2, 4):
        results = tmp_path_factory.mktemp(f"budget{rounds}")
        config = load_config(base={"dataset": str(tiny_faz), "method": "fedavg", "sites": [0, 1], "rounds": rounds,
                                   "local_steps": 2, "batch_size": 2, "progress": False, "seed": 0, "threads": 1,
                                   "device": "cpu", "val_fraction": 0.5})
        run_experiment(config, results / "runs" / "faz32" / "upstream" / "fedavg" / "seed0")
        roots.append(results)
    return roots


def test_budget_doubling_pairs_runs_and_reports_the_change_of_mean_test_dice(doubled):
    script = load_script()
    small, large = doubled
    table = script.compare(small, large, "last")
    assert list(table["method"]) == ["fedavg"] and list(table["seeds"]) == [1]
    assert list(table["dataset"]) == ["faz32"] and list(table["assignment"]) == ["upstream"]
    assert table["steps"].iloc[0] == "4 -> 8"

    def mean_dice(results):
        cases = record.read_cases(results / "runs" / "faz32" / "upstream" / "fedavg" / "seed0")
        return cases[(cases["model"] == "personalized") & (cases["selection"] == "last")]["mean_dice"].mean()

    assert table["change"].iloc[0] == pytest.approx(100 * (mean_dice(large) - mean_dice(small)))
    assert 0 <= table["wilcoxon_p"].iloc[0] <= 1
    assert table["flags_small"].iloc[0] in {"ok", "rising"}


def test_budget_doubling_without_common_runs_says_so(doubled, tmp_path):
    with pytest.raises(SystemExit, match="no method and seed finished in both"):
        load_script().main([str(doubled[0]), str(tmp_path)])
