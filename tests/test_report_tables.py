"""Aggregation, statistics and tables on contract-conforming fake run directories."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedicra.errors import UserError
from fedicra.report import build, collect, diagnostics, fairness, stats, tables
from fedicra.report.fake_runs import write_fake_benchmark, write_fake_run

METHODS = ["fedavg", "fedbn", "fedavg_copy", "fedicra"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    plan = {}
    for ds in ("synth-faz", "synth-odoc"):
        for m, q in (("fedavg", 0.6), ("fedbn", 0.7), ("fedavg_copy", 0.6), ("fedicra", 0.85)):
            plan[(ds, "upstream", m)] = q
    write_fake_benchmark(root, plan, seeds=(0, 1, 2), num_sites=3, cases_per_site=8)
    return root, collect.collect(collect.find_runs(root / "runs"))


def test_tidy_tables_have_one_row_per_case_and_run(bench):
    _, col = bench
    assert len(col.runs) == 2 * 4 * 3
    # 3 sites x 8 cases x (personalized last, best_val; global last) per run, as the engine writes
    assert len(col.cases) == 24 * 3 * 8 * 3
    assert set(col.cases["round"]) == {3, 4}
    assert list(col.cases.columns[:4]) == collect.KEYS
    run = col.runs[(col.runs["method"] == "fedicra") & (col.runs["dataset"] == "synth-faz")].iloc[0]
    # fake runs send 3 sites x (1000..3000 up) ... bytes_up + bytes_down over rounds
    assert run["mb_per_round"] == pytest.approx((4 * 1000 * 6 + 4 * 2000 * 3) / 4 / 1e6)
    assert set(col.rounds["method"]) == set(METHODS)


def test_save_and_load_round_trip_keeps_case_ids_as_text(bench, tmp_path):
    _, col = bench
    collect.save(col, tmp_path)
    back = collect.load(tmp_path)
    assert back.cases["case"].iloc[0] == "case000"
    pd.testing.assert_frame_equal(back.runs[collect.KEYS], col.runs[collect.KEYS])


def test_mean_std_and_bold_best(bench):
    _, col = bench
    cases = stats.select_protocol(col.cases, "personalized", "best_val")
    faz = cases[cases["dataset"] == "synth-faz"]
    dice, hd95 = tables.results_tables(faz, "synth-faz", "upstream", METHODS)
    assert dice.header == ["Method", "Domain1", "Domain2", "Domain3", "Average"]
    row = dice.rows[[r[0] for r in dice.rows].index("fedicra")]
    # recompute Domain1 by hand: per-seed mean over cases, then mean +- std over seeds
    d1 = faz[(faz["method"] == "fedicra") & (faz["site_name"] == "Domain1")].groupby("seed")["dice_faz"].mean()
    assert row[1] == f"{d1.mean() * 100:.2f} ± {d1.std() * 100:.2f}"
    best = [r[0] for r, b in zip(dice.rows, dice.bold) if all(b[1:])]
    assert best == ["fedicra"]
    # HD95: lower is better, the best is fedicra too
    assert [r[0] for r, b in zip(hd95.rows, hd95.bold) if all(b[1:])] == ["fedicra"]
    md = tables.to_markdown(dice)
    assert "**" + row[1] + "**" in md


def test_significance_marks_clear_winner_but_not_identical_methods(bench):
    _, col = bench
    cases = stats.select_protocol(col.cases, "personalized", "best_val")
    cmp_ = stats.compare_methods(cases[cases["dataset"] == "synth-faz"])
    dice = cmp_[cmp_["metric"] == "dice"]
    worse = dice[dice["method"].isin(["fedavg", "fedbn"])]
    assert worse["significant"].all() and (worse["p_vs_best"] < 0.01).all()
    assert not dice[dice["method"] == "fedicra"]["significant"].any()
    # identical quality and noise: fedavg vs fedavg_copy gives zero differences -> p = 1
    assert stats.wilcoxon_p(np.ones(5), np.ones(5)) == 1.0


def test_significance_pairs_each_test_case_once_however_many_seeds_ran(tmp_path):
    """Five test cases are five pairs, not fifteen with three seeds: b beats a on every case, but a
    two-sided Wilcoxon of five pairs cannot go below p = 0.0625 (pairing (seed, case) gave p < 0.001)."""
    for method, quality, noise in (("a", 0.80, 1), ("b", 0.90, 2)):
        for seed in (0, 1, 2):
            write_fake_run(tmp_path / "runs" / "synth-faz" / "upstream" / method / f"seed{seed}", method=method,
                           seed=seed, quality=quality, noise_seed=noise, num_sites=1, cases_per_site=5)
    cases = stats.select_protocol(collect.collect(collect.find_runs(tmp_path / "runs")).cases, "personalized", "last")
    row = stats.compare_methods(cases, metrics=("dice",)).query("method == 'a' and site == 'Domain1'").iloc[0]
    per_case = cases.pivot_table(index="case", columns="method", values="dice_faz", aggfunc="mean")
    assert (per_case["b"] > per_case["a"]).all()
    assert row["p_vs_best"] == pytest.approx(stats.wilcoxon_p(per_case["a"], per_case["b"]))
    assert row["p_vs_best"] == pytest.approx(0.0625) and not row["significant"]


def test_the_full_mask_bound_is_shown_but_the_best_and_the_tests_are_among_the_weak_label_methods(tmp_path):
    """`centralized_full` beats every method (it trains on full masks): it is the bound, not the column's
    best, so bold and † say which weak-label method leads and which are worse than it."""
    plan = {("synth-faz", "upstream", "centralized_full"): {"quality": 0.95, "labels": ("mask",)},
            ("synth-faz", "upstream", "fedicra"): 0.8, ("synth-faz", "upstream", "fedavg"): 0.6}
    write_fake_benchmark(tmp_path, plan, seeds=(0, 1, 2), num_sites=2, cases_per_site=8)
    cases = stats.select_protocol(collect.collect(collect.find_runs(tmp_path / "runs")).cases, "personalized", "best_val")
    dice = stats.compare_methods(cases, metrics=("dice",)).set_index(["method", "site"], drop=False)
    bound, leader, worse = (dice.xs(m, level="method") for m in ("centralized_full", "fedicra", "fedavg"))
    assert (bound["mean"] > leader["mean"]).all()
    assert bound["reference"].all() and not bound["is_best"].any() and bound["p_vs_best"].isna().all()
    assert leader["is_best"].all() and not leader["significant"].any()
    assert worse["significant"].all()
    table = tables.results_tables(cases, "synth-faz", "upstream", ["centralized_full", "fedicra", "fedavg"],
                                  metrics=("dice",))[0]
    assert [row[0] for row, b in zip(table.rows, table.bold) if any(b)] == ["fedicra"]
    assert "centralized_full trained on full masks: shown as the bound, not bold, not tested" in table.caption
    fair = tables.fairness_table(fairness.fairness_table(cases), ["centralized_full", "fedicra", "fedavg"],
                                 diagnostics.full_mask_methods(cases))
    assert [row[2] for row, b in zip(fair.rows, fair.bold) if b[3]] == ["fedicra"]   # average Dice column
    assert not any(fair.bold[[row[2] for row in fair.rows].index("centralized_full")])


def test_no_significance_is_claimed_below_three_seeds(tmp_path):
    """The same clear winner as with three seeds, but one seed: the p-value is kept, no † is drawn and the
    caption says why (issue 9: at least 3 seeds wherever a table claims significance)."""
    plan = {("synth-faz", "upstream", "fedicra"): 0.85, ("synth-faz", "upstream", "fedavg"): 0.6}
    write_fake_benchmark(tmp_path, plan, seeds=(0,), num_sites=2, cases_per_site=8)
    cases = stats.select_protocol(collect.collect(collect.find_runs(tmp_path / "runs")).cases, "personalized", "best_val")
    fedavg = stats.compare_methods(cases, metrics=("dice",)).query("method == 'fedavg'")
    assert (fedavg["p_vs_best"] < 0.05).all() and not fedavg["significant"].any()
    table = tables.results_tables(cases, "synth-faz", "upstream", ["fedicra", "fedavg"], metrics=("dice",))[0]
    assert not any(any(d) for d in table.dagger)
    assert "no significance marks: they need 3 or more seeds per method (here 1)" in table.caption


def test_no_marks_when_methods_are_identical(tmp_path):
    plan = {("synth-faz", "upstream", m): 0.7 for m in ("a", "b", "c")}
    write_fake_benchmark(tmp_path, plan, seeds=(0, 1))
    col = collect.collect(collect.find_runs(tmp_path / "runs"))
    cases = stats.select_protocol(col.cases, "personalized", "last")
    cmp_ = stats.compare_methods(cases)
    assert not cmp_["significant"].any()
    assert cmp_["is_best"].all()  # ties are all bold


def test_friedman_nemenyi_ranks_best_method_first(bench):
    _, col = bench
    cases = stats.select_protocol(col.cases, "personalized", "best_val")
    result = stats.friedman_nemenyi(cases)
    assert result.matrix.shape == (6, 4)  # 2 datasets x 3 sites, 4 methods
    assert result.ranks.index[0] == "fedicra" and result.ranks.iloc[0] == 1.0
    assert result.pvalue < 0.05
    assert result.nemenyi.shape == (4, 4)
    # Demsar's CD: q_0.05(k=4) = 2.569
    assert result.critical_difference == pytest.approx(2.569 * np.sqrt(4 * 5 / (6 * 6)), rel=1e-3)
    assert stats.friedman_nemenyi(cases[cases["method"].isin(["fedavg", "fedbn"])]) is None


def test_cost_table_shows_the_gradient_steps_each_site_took(real_runs):
    from fedicra.report.tables import cost_table, to_markdown

    col = collect.collect(collect.find_runs(real_runs))
    md = to_markdown(cost_table(col.runs, "faz32", "upstream", ["fedavg", "local"]))
    assert "Gradient steps per site" in md
    assert "| fedavg | 4 |" in md and "| local | 4 |" in md   # 2 rounds x 2 local steps, every site
    uneven = col.runs.assign(gradient_steps_max=col.runs["gradient_steps_max"] + (col.runs["method"] == "fedavg") * 4)
    assert "| fedavg | 4–8 |" in to_markdown(cost_table(uneven, "faz32", "upstream", ["fedavg", "local"]))


def test_write_tables_md_and_tex(bench, tmp_path):
    _, col = bench
    opts = build.ReportOptions(methods=METHODS)
    written = build.write_tables(col, opts, tmp_path)
    expected = build.expected_outputs(["synth-faz", "synth-odoc"], ["upstream"])["tables"]
    assert sorted(p.name for p in written) == sorted(Path(rel).name for rel in expected)
    tex = (tmp_path / "synth-odoc__upstream.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\textbf{" in tex and r"$^{\dagger}$" in tex
    assert "Domain1 cup" in tex and "Average disc" in tex and "MB per round" in tex
    md = (tmp_path / "ranking.md").read_text()
    assert "Friedman" in md and "| fedicra | **1.00** |" in md
    rel = [e for e in written if e.name == "synth-faz__upstream.md"][0].read_text()
    assert "†" in rel and "HD95 (px)" in rel


def test_protocol_selection_and_bad_input(bench, tmp_path):
    _, col = bench
    with pytest.raises(UserError, match="selection"):
        build.ReportOptions(selection="best")
    with pytest.raises(UserError, match="no results for model=global selection=bogus"):
        stats.select_protocol(col.cases, "global", "bogus")
    bad = write_fake_run(tmp_path / "runs" / "d" / "upstream" / "m" / "seed0")
    (bad / "summary.json").write_text("{not json")
    with pytest.raises(UserError, match="summary.json: invalid JSON"):
        collect.collect([bad])
    with pytest.raises(UserError, match="not a run directory"):
        collect.run_keys(tmp_path / "nothing")
    good = write_fake_run(tmp_path / "runs" / "d" / "upstream" / "m" / "seed1")
    pd.read_csv(good / "cases.csv").drop(columns=["model"]).to_csv(good / "cases.csv", index=False)
    with pytest.raises(UserError, match="cases.csv: missing column model"):
        collect.load_run(good)
    assert json.loads((good / "summary.json").read_text())["rounds"] == 4
