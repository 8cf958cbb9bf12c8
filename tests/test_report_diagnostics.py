"""Convergence, bound, identical-method, fairness, label-kind and label-efficiency analyses on fakes."""
import numpy as np
import pandas as pd
import pytest

from fedicra import record
from fedicra.report import build, collect, diagnostics, efficiency, fairness
from fedicra.report.__main__ import main as report_main
from fedicra.report.fake_runs import write_fake_benchmark
from fedicra.report.stats import select_protocol

ROTATIONS = {"rotate0": ("scribble", "keypoint", "block"), "rotate1": ("keypoint", "block", "scribble")}


@pytest.fixture(scope="module")
def crossed(tmp_path_factory):
    """Two rotations + full masks; fedicra sacrifices Domain1 and is still rising; twin == fedavg."""
    root = tmp_path_factory.mktemp("crossed")
    plan = {}
    for assignment, labels in {**ROTATIONS, "mask": ("mask",)}.items():
        boost = 0.1 if assignment == "mask" else 0.0
        plan[("synth-faz", assignment, "fedavg")] = {"quality": 0.6 + boost, "labels": labels}
        plan[("synth-faz", assignment, "twin")] = {"quality": 0.6 + boost, "labels": labels}
        plan[("synth-faz", assignment, "fedicra")] = {"quality": 0.8 + boost, "labels": labels, "plateau": False,
                                                      "site_quality": {0: 0.5 + boost}}
        plan[("synth-faz", assignment, "centralized_full")] = {"quality": 0.65, "labels": ("mask",)}
    write_fake_benchmark(root, plan, seeds=(0, 1, 2), num_sites=3, cases_per_site=5, img_size=12)
    return root, collect.collect(collect.find_runs(root / "runs"))


def test_convergence_gain_flags_still_rising_runs(crossed):
    _, col = crossed
    flags = diagnostics.convergence_flags(col.runs).set_axis(
        pd.MultiIndex.from_frame(col.runs[["assignment", "method", "seed"]]))
    assert (flags.xs("fedicra", level="method") == "not converged").all()
    assert (flags.xs("fedavg", level="method") == "converged").all()
    rounds = pd.DataFrame({"round": [1, 2, 3, 4], "site": 0, "mean_dice": [0.1, 0.5, 0.7, 0.9]})
    assert diagnostics.convergence_gain(rounds) == pytest.approx(0.2)   # last quarter of 4 rounds: 3 -> 4
    assert diagnostics.convergence_gain(rounds.assign(mean_dice=float("nan"))) != 0.0   # NaN: unknown
    # A plateau seen through a noisy validation split: window means, not the last single round.
    # (two single rounds, 12 -> 16, would read 0.86 -> 0.88: a 2-point "gain")
    noisy = pd.DataFrame({"round": range(1, 17), "site": 0, "mean_dice": [0.80, 0.86] * 7 + [0.80, 0.88]})
    assert diagnostics.convergence_gain(noisy) == pytest.approx((0.80 + 0.86 + 0.80 + 0.88) / 4 - (0.80 + 0.86) / 2)
    assert diagnostics.convergence_flag(diagnostics.convergence_gain(noisy)) == "converged"
    # A gain above one point that noise explains (p >= 0.05) is not "still improving"; a steady rise is.
    wobbly = pd.DataFrame({"round": range(1, 25), "site": 0,
                           "mean_dice": [0.80, 0.86] * 9 + [0.80, 0.90] * 3})
    gain, p = diagnostics.convergence_gain(wobbly), diagnostics.convergence_p(wobbly)
    assert gain > diagnostics.CONVERGED_GAIN and p >= diagnostics.CONVERGED_ALPHA
    assert diagnostics.convergence_flag(gain, p) == "converged"
    assert diagnostics.convergence_flag(gain) == "not converged"   # untestable: the gain alone decides
    rising = pd.DataFrame({"round": range(1, 25), "site": 0,
                           "mean_dice": [0.5 + 0.015 * r + (0.005 if r % 2 else -0.005) for r in range(24)]})
    assert diagnostics.convergence_p(rising) < diagnostics.CONVERGED_ALPHA
    assert diagnostics.convergence_flag(diagnostics.convergence_gain(rising), diagnostics.convergence_p(rising)) \
        == "not converged"
    # The validation peak: the round of the highest mean over sites (two sites here), NaN without scores.
    two_sites = pd.DataFrame({"round": [1, 1, 2, 2, 3, 3], "site": [0, 1] * 3,
                              "mean_dice": [0.2, 0.4, 0.9, 0.1, 0.6, 0.6]})   # means 0.3, 0.5, 0.6
    assert diagnostics.peak_round(two_sites) == 3
    assert diagnostics.peak_round(pd.concat([two_sites, pd.DataFrame({"round": [4], "site": [-1], "mean_dice": [1.0]})])) == 3
    assert np.isnan(diagnostics.peak_round(two_sites.assign(mean_dice=float("nan"))))
    # A short run (fewer than MIN_TEST_ROUNDS per quarter) is not excused by a test without power.
    short = pd.DataFrame({"round": range(1, 17), "site": 0, "mean_dice": [0.80, 0.86] * 6 + [0.80, 0.90] * 2})
    assert np.isnan(diagnostics.convergence_p(short)) and diagnostics.convergence_gain(short) > diagnostics.CONVERGED_GAIN
    assert diagnostics.convergence_flag(diagnostics.convergence_gain(short), diagnostics.convergence_p(short)) \
        == "not converged"


def test_identical_methods_and_beaten_bound_are_flagged(crossed):
    _, col = crossed
    assert diagnostics.identical_methods(col.cases) == [("fedavg", "twin")]
    cases = select_protocol(col.cases, "personalized", "best_val")
    beaten = {(h["assignment"], h["method"]) for h in diagnostics.beats_upper_bound(cases)}
    assert ("mask", "fedicra") in beaten and ("rotate0", "fedavg") not in beaten


def test_label_kind_design_and_effect(crossed):
    _, col = crossed
    cases = select_protocol(col.cases, "personalized", "best_val")
    assert diagnostics.separates_label_kind(cases)
    assert not diagnostics.separates_label_kind(cases[cases["assignment"] == "rotate0"])
    effect = diagnostics.label_kind_effect(cases[cases["assignment"] != "mask"])
    keypoint = effect[(effect["method"] == "fedicra") & (effect["label"] == "keypoint")].iloc[0]
    # keypoint was used by Domain2 (rotate0) and Domain1 (rotate1): the effect averages both sites
    assert keypoint["sites"] == 2
    per_site = cases[(cases["method"] == "fedicra") & (cases["label"] == "keypoint")].groupby("site_name")["mean_dice"].mean()
    assert keypoint["mean_dice"] == pytest.approx(per_site.mean())


def test_label_kind_design_needs_every_site_to_vary_and_ignores_the_full_mask_bound(tmp_path):
    """Site and label kind stay one factor (the label-kind analysis is not drawn) when one assignment gives
    each kind to two sites, even beside `centralized_full` (masks at every site), and when a second
    assignment changes the kind of one site only."""
    def cases_of(plan, name):
        write_fake_benchmark(tmp_path / name, plan, seeds=(0,), num_sites=4, cases_per_site=3, img_size=12)
        return select_protocol(collect.collect(collect.find_runs(tmp_path / name / "runs")).cases,
                               "personalized", "best_val")

    one = {("synth-faz", "upstream", "fedavg"): {"quality": 0.6, "labels": ("scribble", "scribble", "box", "box")},
           ("synth-faz", "upstream", "centralized_full"): {"quality": 0.9, "labels": ("mask",)}}
    cases = cases_of(one, "one")
    assert diagnostics.full_mask_methods(cases) == ["centralized_full"]
    assert set(diagnostics.assignment_rows(cases)["label"]) == {"scribble", "box"}
    assert not diagnostics.separates_label_kind(cases)
    moved = ("box", "scribble", "box", "box")   # a second assignment (any valid name) that moves Domain1 only
    one_site_moves = {**one, ("synth-faz", "rotate1", "fedavg"): {"quality": 0.6, "labels": moved}}
    assert not diagnostics.separates_label_kind(cases_of(one_site_moves, "moves"))


def test_fairness_worst_site_and_trades(crossed):
    _, col = crossed
    cases = select_protocol(col.cases, "personalized", "best_val")
    table = fairness.fairness_table(cases).set_index(["assignment", "method"])
    row = table.loc[("rotate0", "fedicra")]
    assert row["worst_site"] == "Domain1" and row["worst_site_dice"] == pytest.approx(0.5, abs=0.05)
    assert row["gap"] == pytest.approx(0.3, abs=0.05) and row["n_seeds"] == 3
    trades = {(t["assignment"], t["method"], t["over"]) for t in fairness.trades(table.reset_index())}
    assert ("rotate0", "fedicra", "fedavg") in trades and not any(t[1] == "fedavg" for t in trades)


def test_label_efficiency_prefers_the_same_method_on_full_masks(crossed):
    _, col = crossed
    cases = select_protocol(col.cases, "personalized", "best_val")
    ratios = efficiency.label_efficiency(cases)
    fedavg = ratios[(ratios["method"] == "fedavg") & (ratios["assignment"] == "rotate0")]
    assert set(fedavg["reference"]) == {"same method, full masks"}
    assert fedavg["ratio"].mean() == pytest.approx(0.6 / 0.7, abs=0.02)
    # without the mask assignment the pooled full-mask bound is the reference
    no_mask = efficiency.label_efficiency(cases[cases["assignment"] != "mask"])
    assert set(no_mask[no_mask["method"] == "fedavg"]["reference"]) == {"centralized_full"}
    assert efficiency.label_efficiency(cases[~cases["method"].isin(["centralized_full"]) &
                                             (cases["assignment"] != "mask")]).empty


def test_report_shows_banners_and_draws_label_kind_figure(crossed, tmp_path):
    root, _ = crossed
    out = tmp_path / "rep"
    assert report_main(["all", str(root / "runs"), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "**Not converged:" in report and "**Identical numbers:** `fedavg` and `twin`" in report
    assert "**Upper bound beaten:** fedicra" in report
    assert "mean ± std over 3 seeds" in report
    assert "![Dice by annotation type](figures/dice_by_annotation.png)" in report
    assert "`fedicra` beats `fedavg` on average" in report
    assert "| synth-faz | keypoint | fedavg |" in (out / "tables" / "label_efficiency.md").read_text()
    assert "## Model selection" in report and "| synth-faz | rotate0 | fedicra |" in (out / "tables" / "selection.md").read_text()
    for rel in build.expected_outputs(["synth-faz"], ["mask", "rotate0", "rotate1"])["figures"]:
        assert (out / rel).is_file(), rel


def test_convergence_table_shows_each_runs_validation_peak_and_the_site_that_gained_most(crossed, tmp_path):
    from fedicra.report import tables

    _, col = crossed
    table = tables.convergence_table(col.runs, ["fedavg", "twin", "fedicra", "centralized_full"])
    peak, site_gain = table.header.index("Val. peak round"), table.header.index("Largest site gain (%)")
    rows = {(r[1], r[2], r[3]): r for r in table.rows}
    for _, run in col.runs.iterrows():
        row = rows[run["assignment"], run["method"], str(run["seed"])]
        assert row[peak] == f"{run['val_peak_round']:.0f}"
        site, gain = diagnostics.largest_site_gain(record.read_rounds(run["run_dir"]))
        assert run["rising_site"] == f"Domain{site + 1}" and row[site_gain] == f"Domain{site + 1} {gain * 100:.2f}"
    rising = col.runs[col.runs["method"] == "fedicra"]
    assert (rising["val_peak_round"] == rising["rounds"]).all()      # still rising: the peak is the last round
    # the table step reads runs.csv back: same cells, and a run without validation scores shows a dash
    collect.save(col, tmp_path)
    runs = collect.load(tmp_path).runs
    assert tables.convergence_table(runs, ["fedavg", "twin", "fedicra", "centralized_full"]).rows == table.rows
    unknown = runs.head(1).assign(rising_site=np.nan, rising_site_gain=np.nan)
    assert tables.convergence_table(unknown, ["fedavg"]).rows[0][site_gain] == "–"
    # fedicra rises to the end on every site, fastest where its level is highest (Domain1 is held at 0.5)
    assert set(rising["rising_site"]) <= {"Domain2", "Domain3"}


def test_largest_site_gain_finds_the_site_still_learning_behind_a_flat_mean():
    """Site 0 declines as site 1 rises: the mean over sites is flat (converged), the per-site gain is not."""
    r = np.arange(1, 9)
    rounds = pd.DataFrame({"round": np.concatenate([r, r, r]), "site": [0] * 8 + [1] * 8 + [-1] * 8,
                           "mean_dice": np.concatenate([0.9 - 0.02 * r, 0.7 + 0.02 * r, [np.nan] * 8])})
    assert diagnostics.convergence_gain(rounds) == pytest.approx(0.0)
    site, gain = diagnostics.largest_site_gain(rounds)
    assert site == 1 and gain == pytest.approx(0.02 * 2)        # last two rounds' mean minus the two before
    assert diagnostics.largest_site_gain(rounds.assign(mean_dice=np.nan)) == (None, pytest.approx(np.nan, nan_ok=True))


def test_selection_effect_measures_the_late_decline_per_seed(crossed):
    from fedicra.report import tables

    _, col = crossed
    cases = col.cases.copy()
    late = (cases["method"] == "fedicra") & (cases["selection"] == "last") & (cases["seed"] == 1)
    cases.loc[late, "mean_dice"] -= 0.06                     # seed 1 of fedicra declined after its best round
    effect = diagnostics.selection_effect(cases, "personalized").set_index(
        ["quantity", "assignment", "method", "column"])["value"]
    per_seed = lambda sel: (cases[(cases["method"] == "fedicra") & (cases["assignment"] == "rotate0") &
                                  (cases["model"] == "personalized") & (cases["selection"] == sel)]
                            .groupby(["seed", "site"])["mean_dice"].mean().groupby("seed").mean())
    gap = per_seed("best_val") - per_seed("last")
    assert effect["mean", "rotate0", "fedicra", "best_val - last"] == pytest.approx(gap.mean())
    assert effect["std", "rotate0", "fedicra", "best_val - last"] == pytest.approx(gap.std())
    assert effect["mean", "rotate0", "fedicra", "best_val - last"] == pytest.approx(0.02, abs=1e-9)   # 0.06 / 3 seeds
    assert effect["mean", "rotate0", "fedavg", "best_val - last"] == pytest.approx(0.0, abs=1e-9)
    assert effect["n_seeds", "rotate0", "fedicra", "last"] == 3
    table = tables.selection_table(diagnostics.selection_effect(cases, "personalized"), ["fedavg", "fedicra"],
                                   "personalized", "best_val")
    assert table.header[-1] == "Best on validation - last (%)"
    row = next(r for r in table.rows if r[1] == "rotate0" and r[2] == "fedicra")
    assert row[-1] == f"{100 * gap.mean():.2f} ± {100 * gap.std():.2f}"
