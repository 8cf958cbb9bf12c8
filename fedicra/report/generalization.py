"""Unseen-site generalization: leave-one-site-out scores of a site that never trained.

Input: the `unseen_global` / `unseen_personalized` rows of the collected cases (one leave-one-site-out
run per held-out site and seed, `fedicra.fl.holdout`). Per run and held-out site, the mean over the
site's test cases; then per (dataset, assignment, method, model): the mean over every (seed, held-out
site) pair, the std over seeds of the per-seed average over held-out sites, the std over held-out
sites of the per-site average over seeds, and the worst held-out site.
"""
from __future__ import annotations

import pandas as pd

from fedicra.record import UNSEEN_GLOBAL, UNSEEN_PERSONALIZED

MODEL_NAMES = {UNSEEN_GLOBAL: "global", UNSEEN_PERSONALIZED: "best available"}
METRICS = ("mean_dice", "mean_hd95")
GROUP = ["dataset", "assignment", "method", "model"]


def held_out_means(cases: pd.DataFrame) -> pd.DataFrame:
    """GROUP + seed, site_name -> mean Dice and HD95 over the held-out site's test cases."""
    part = cases[cases["model"].isin(MODEL_NAMES)]
    return part.groupby(GROUP + ["seed", "site_name"], as_index=False)[list(METRICS)].mean()


def generalization_table(cases: pd.DataFrame) -> pd.DataFrame:
    """One row per GROUP: `<metric>`, `<metric>_seed_std`, `<metric>_site_std` for each metric, the worst
    held-out site's Dice, and the counts of held-out sites and seeds. Empty without unseen rows."""
    means = held_out_means(cases)
    if means.empty:
        return pd.DataFrame(columns=GROUP)
    grouped = means.groupby(GROUP)
    table = grouped[list(METRICS)].mean()
    per_seed = means.groupby(GROUP + ["seed"])[list(METRICS)].mean().groupby(level=GROUP).std()
    per_site = means.groupby(GROUP + ["site_name"])[list(METRICS)].mean().groupby(level=GROUP)
    table = table.join(per_seed.add_suffix("_seed_std")).join(per_site.std().add_suffix("_site_std"))
    table["worst_site_dice"] = per_site["mean_dice"].min()
    table["held_out_sites"] = grouped["site_name"].nunique()
    table["n_seeds"] = grouped["seed"].nunique()
    return table.reset_index()
