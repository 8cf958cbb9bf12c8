"""Fairness across sites: which site a method sacrifices.

Per run (seed), from the site means of one protocol's test scores: the average over sites, the
worst site, the standard deviation across sites (sample std) and the gap best-minus-worst site;
the table shows mean ± std of each over seeds.
"""
from __future__ import annotations

import pandas as pd

TRADE_MARGIN = 0.01   # Dice points (as a fraction) a difference must exceed to count as a trade

COLUMNS = ("mean_dice", "worst_site_dice", "site_std", "gap")


def site_means(cases: pd.DataFrame) -> pd.DataFrame:
    """dataset, assignment, method, seed, site_name -> mean Dice over the site's test cases."""
    return cases.groupby(["dataset", "assignment", "method", "seed", "site_name"], as_index=False)["mean_dice"].mean()


def fairness_table(cases: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, assignment, method): mean and std over seeds of each of `COLUMNS`, the seed
    count and the site that is most often the worst."""
    sites = site_means(cases)
    per_seed = sites.groupby(["dataset", "assignment", "method", "seed"])["mean_dice"].agg(
        mean_dice="mean", worst_site_dice="min", best="max", site_std="std")
    per_seed["gap"] = per_seed.pop("best") - per_seed["worst_site_dice"]
    worst = sites.loc[sites.groupby(["dataset", "assignment", "method", "seed"])["mean_dice"].idxmin()]
    worst_site = worst.groupby(["dataset", "assignment", "method"])["site_name"].agg(lambda s: s.mode().iloc[0])
    grouped = per_seed.groupby(level=["dataset", "assignment", "method"])
    table = grouped.mean().join(grouped.std().add_suffix("_std"))
    table["n_seeds"] = grouped.size()
    table["worst_site"] = worst_site
    return table.reset_index()


def trades(table: pd.DataFrame) -> list[dict]:
    """Pairs where method `a` has the better average but the worse worst site than method `b`."""
    found = []
    for (dataset, assignment), part in table.groupby(["dataset", "assignment"]):
        for _, a in part.iterrows():
            for _, b in part.iterrows():
                if (a["mean_dice"] > b["mean_dice"] + TRADE_MARGIN
                        and a["worst_site_dice"] < b["worst_site_dice"] - TRADE_MARGIN):
                    found.append({"dataset": dataset, "assignment": assignment, "method": a["method"],
                                  "over": b["method"], "average_gain": a["mean_dice"] - b["mean_dice"],
                                  "worst_site_loss": b["worst_site_dice"] - a["worst_site_dice"]})
    return found
