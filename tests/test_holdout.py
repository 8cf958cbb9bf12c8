"""Leave-one-site-out: the held-out site never trains and is scored as a new site (fedicra.fl.holdout)."""
import pandas as pd
import pytest

from helpers import tiny_config

from fedicra.errors import UserError
from fedicra.fl.runner import run_experiment


def _run(tiny_faz, path, **overrides):
    config = tiny_config(tiny_faz, rounds=2, local_steps=2, threads=1, device="cpu", **overrides)
    summary = run_experiment(config, path)
    return summary, pd.read_csv(path / "cases.csv"), pd.read_csv(path / "rounds.csv")


@pytest.mark.parametrize("method, pooled_sites", [("fedavg", None), ("centralized", None)])
def test_held_out_site_never_trains(tiny_faz, tmp_path, method, pooled_sites):
    # Holding out site 0 (the pooled client's key, too) must give exactly the run on sites 1, 2.
    summary, cases, rounds = _run(tiny_faz, tmp_path / "loso", method=method, sites=[0, 1, 2], holdout_site=0)
    _, plain, _ = _run(tiny_faz, tmp_path / "plain", method=method, sites=[1, 2])
    seen = cases[~cases["model"].str.startswith("unseen")].reset_index(drop=True)
    pd.testing.assert_frame_equal(seen, plain)
    assert set(rounds.loc[rounds["site"] >= 0, "site"]) == {1, 2}
    unseen = cases[cases["model"].str.startswith("unseen")]
    assert set(unseen["site"]) == {0} and len(unseen) > 0
    assert set(unseen["model"]) == ({"unseen_global", "unseen_personalized"} if method == "fedavg" else {"unseen_global"})
    if method == "fedavg":   # FedAvg's receipt is a plain load: the new site's model is the global one
        a, b = (unseen[unseen["model"] == m].reset_index(drop=True) for m in ("unseen_global", "unseen_personalized"))
        pd.testing.assert_series_equal(a["mean_dice"], b["mean_dice"])
    assert summary["protocol"]["holdout_site"] == 0


def test_what_each_method_offers_a_new_site(tiny_faz, tmp_path):
    rows = {}
    for method in ("fedbn", "local", "ditto", "fedala"):
        _, cases, _ = _run(tiny_faz, tmp_path / method, method=method, sites=[0, 1, 2], holdout_site=2)
        rows[method] = cases[cases["site"] == 2]
    assert set(rows["fedbn"]["model"]) == {"unseen_personalized"}   # no global model, fresh BatchNorm
    assert rows["local"].empty                                       # nothing is shared with a new site
    assert set(rows["ditto"]["model"]) == {"unseen_global", "unseen_personalized"}
    ditto = [rows["ditto"][rows["ditto"]["model"] == m]["mean_hd95"].to_numpy() for m in ("unseen_global", "unseen_personalized")]
    assert (ditto[0] == ditto[1]).all()   # a personal model that never trained: the received global one
    assert set(rows["fedala"]["model"]) == {"unseen_global", "unseen_personalized"}


def test_bad_holdout_site(tiny_faz, tmp_path):
    with pytest.raises(UserError, match="option holdout_site: site 9 does not exist"):
        run_experiment(tiny_config(tiny_faz, holdout_site=9), tmp_path / "a")
    with pytest.raises(UserError, match="besides holdout_site"):
        run_experiment(tiny_config(tiny_faz, sites=[1], holdout_site=1), tmp_path / "b")
    assert not (tmp_path / "a" / "config.json").exists()


def test_generalization_table_from_real_runs(tiny_faz, tmp_path):
    """Real tiny runs in the workflow layout (3 sites, 2 rounds, 32 px): the LOSO rows reach the table,
    the K-1-site scores of a LOSO run reach no other table."""
    from fedicra.report import generalization
    from fedicra.report.collect import collect, find_runs

    root = tmp_path / "runs" / "faz32" / "upstream"
    for method in ("fedavg", "centralized"):
        run_experiment(tiny_config(tiny_faz, method=method, sites=[0, 1, 2], rounds=2, local_steps=2, threads=1,
                                   device="cpu"), root / method / "seed0")
        for site in (0, 2):
            run_experiment(tiny_config(tiny_faz, method=method, sites=[0, 1, 2], rounds=2, local_steps=2, threads=1,
                                       device="cpu", holdout_site=site), root / method / f"holdout{site}" / "seed0")
    collected = collect(find_runs(tmp_path / "runs"))
    assert len(collected.runs) == 2 and collected.runs["holdout_site"].isna().all()
    seen = collected.cases[~collected.cases["model"].str.startswith("unseen")]
    assert len(seen) == len(pd.concat(pd.read_csv(root / m / "seed0" / "cases.csv") for m in ("fedavg", "centralized")))
    table = generalization.generalization_table(collected.cases).set_index(["method", "model"])
    assert sorted(table.index) == [("centralized", "unseen_global"), ("fedavg", "unseen_global"),
                                   ("fedavg", "unseen_personalized")]
    assert (table["held_out_sites"] == 2).all() and (table["n_seeds"] == 1).all()
    unseen = collected.cases[(collected.cases["method"] == "fedavg") & (collected.cases["model"] == "unseen_global")]
    per_site = unseen.groupby("site_name")["mean_dice"].mean()
    assert table.loc[("fedavg", "unseen_global"), "mean_dice"] == pytest.approx(per_site.mean())
    assert table.loc[("fedavg", "unseen_global"), "worst_site_dice"] == pytest.approx(per_site.min())


def test_collect_refuses_a_holdout_folder_that_disagrees_with_its_config(tmp_path):
    from fedicra.report.collect import collect
    from fedicra.report.fake_runs import write_fake_run

    run = write_fake_run(tmp_path / "runs" / "d" / "upstream" / "fedavg" / "holdout1" / "seed0", holdout_site=2)
    with pytest.raises(UserError, match="holdout_site = 2 but the folder says holdout1"):
        collect([run])
