"""Label efficiency: how much of full supervision each kind of cheap annotation recovers.

For every (dataset, assignment, site, method) trained on a weak label kind, the ratio of its test
Dice (mean over seeds) to the same site's full-mask Dice: the same method trained on full masks
(a run whose site label is `mask`, e.g. assignment `mask`) where one exists, else the pooled
full-mask bound `centralized_full`. Rows without any full-mask reference are left out.
"""
from __future__ import annotations

import pandas as pd

from fedicra.data.manifest import FULL_LABEL as FULL
from fedicra.report.diagnostics import UPPER_BOUND


def label_efficiency(cases: pd.DataFrame) -> pd.DataFrame:
    sites = (cases.groupby(["dataset", "assignment", "method", "seed", "site_name", "label"])["mean_dice"].mean()
             .groupby(level=["dataset", "assignment", "method", "site_name", "label"]).mean().reset_index())
    full = sites[sites["label"] == FULL]
    same = full.groupby(["dataset", "method", "site_name"])["mean_dice"].mean()
    bound = full[full["method"] == UPPER_BOUND].groupby(["dataset", "site_name"])["mean_dice"].mean()
    rows = []
    for _, row in sites[sites["label"] != FULL].iterrows():
        if (row["dataset"], row["method"], row["site_name"]) in same.index:
            reference, name = same[(row["dataset"], row["method"], row["site_name"])], "same method, full masks"
        elif (row["dataset"], row["site_name"]) in bound.index:
            reference, name = bound[(row["dataset"], row["site_name"])], UPPER_BOUND
        else:
            continue
        rows.append({**row.to_dict(), "weak_dice": row["mean_dice"], "full_dice": reference, "reference": name,
                     "ratio": row["mean_dice"] / reference if reference > 0 else float("nan")})
    columns = ["dataset", "assignment", "method", "site_name", "label", "weak_dice", "full_dice", "reference", "ratio"]
    return pd.DataFrame(rows, columns=columns)
