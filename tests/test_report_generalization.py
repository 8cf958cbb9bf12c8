"""The generalization table's spreads, on fake LOSO runs written through the record."""
import pytest

from fedicra.report import generalization, tables
from fedicra.report.collect import collect, find_runs
from fedicra.report.fake_runs import write_fake_benchmark


def test_spreads_over_seeds_and_held_out_sites(tmp_path):
    plan = {("faz", "upstream", "fedavg"): {"quality": 0.7, "site_quality": {0: 0.5, 2: 0.9}},
            ("faz", "upstream", "fedbn"): {"quality": 0.6, "global_model": False}}
    write_fake_benchmark(tmp_path, plan, seeds=(0, 1, 2), holdouts=(0, 2))
    cases = collect(find_runs(tmp_path / "runs")).cases
    table = generalization.generalization_table(cases).set_index(["method", "model"])
    means = generalization.held_out_means(cases)
    fedavg = means[(means["method"] == "fedavg") & (means["model"] == "unseen_global")]
    row = table.loc[("fedavg", "unseen_global")]
    assert row["mean_dice"] == pytest.approx(fedavg["mean_dice"].mean())
    assert row["mean_dice_seed_std"] == pytest.approx(fedavg.groupby("seed")["mean_dice"].mean().std())
    assert row["mean_dice_site_std"] == pytest.approx(fedavg.groupby("site_name")["mean_dice"].mean().std())
    assert row["mean_dice_site_std"] > 0.2 and row["worst_site_dice"] < 0.45   # site 0 (level 0.5) is the worst
    assert ("fedbn", "unseen_global") not in table.index and row["n_seeds"] == 3
    rendered = tables.to_markdown(tables.generalization_table(table.reset_index(), ["fedavg", "fedbn"]))
    assert "| faz | upstream | fedbn | best available |" in rendered and "over 3 seeds" in rendered
