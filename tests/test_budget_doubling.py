"""benchmarks/budget_doubling.py on real runs at two budgets: it pairs the same method and seed, and its
change is the difference of the two runs' mean per-case test Dice read through fedicra.record."""
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

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
    assert 0 <= table["cases_p"].iloc[0] <= 1
    assert math.isnan(table["seeds_p"].iloc[0])     # one seed: no spread to test against
    assert table["flags_small"].iloc[0] in {"ok", "rising"}


def test_budget_doubling_without_common_runs_says_so(doubled, tmp_path):
    with pytest.raises(SystemExit, match="no method and seed finished in both"):
        load_script().main([str(doubled[0]), str(tmp_path)])


def test_budget_doubling_tests_seeds_as_seeds_and_cases_once_each(tmp_path):
    """Three seeds whose change differs (+2, -1, +3 Dice points): seeds_p is the paired t-test of the three
    seed means, and cases_p pairs each test case once, its change averaged over the seeds."""
    from fedicra.report.fake_runs import write_fake_run

    shift = {0: 0.02, 1: -0.01, 2: 0.03}
    for seed in shift:
        for name, quality in (("small", 0.7), ("large", 0.7 + shift[seed])):
            write_fake_run(tmp_path / name / "runs" / "faz" / "upstream" / "fedavg" / f"seed{seed}", seed=seed,
                           quality=quality, noise_seed=seed if name == "small" else 10 + seed, cases_per_site=5)
    table = load_script().compare(tmp_path / "small", tmp_path / "large", "last")

    def per_case(name):
        runs = [record.read_cases(tmp_path / name / "runs" / "faz" / "upstream" / "fedavg" / f"seed{s}") for s in shift]
        return [c[(c["model"] == "personalized") & (c["selection"] == "last")].set_index(["site", "case"])["mean_dice"]
                for c in runs]

    small, large = per_case("small"), per_case("large")
    change = [100 * (b.mean() - a.mean()) for a, b in zip(small, large)]
    assert table["change"].iloc[0] == pytest.approx(np.mean(change))
    assert table["seeds_p"].iloc[0] == pytest.approx(stats.ttest_1samp(change, 0).pvalue)
    case_change = sum(b - a for a, b in zip(small, large)) / len(shift)
    assert len(case_change) == 15                   # 3 sites x 5 cases, not x 3 seeds
    assert table["cases_p"].iloc[0] == pytest.approx(stats.wilcoxon(case_change.to_numpy()).pvalue)
