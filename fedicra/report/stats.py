"""Summary statistics and significance tests for the benchmark tables.

- Cell values: per seed, the mean over a site's test cases; the table shows mean +- std over seeds
  (sample std, ddof=1). The site average is, per seed, the plain mean over sites (upstream's
  `val_avg_mean`), then mean +- std over seeds.
- Paired test: two-sided Wilcoxon signed-rank (scipy) of each method against the best method of the
  column, paired on the same test cases. The best is taken among the methods trained on the assigned
  labels: a full-mask reference (`centralized_full`, `diagnostics.full_mask_methods`) bounds them and is
  shown, but a test against it would only say that weak labels are worse than full masks. Pairs: a
  case's value is first averaged over the seeds both methods ran, then pairs are cases for a site
  column and (site, case) for the average column. The test cases
  are the independent units: pairing (seed, case) would count each case once per seed, and three seeds
  would triple the evidence of the same cases. Zero differences are dropped (`zero_method="wilcox"`);
  no correction for multiple comparisons. The seed-to-seed spread is not in the test: read the std.
- Significance is claimed (†) only where both methods ran at least MIN_SEEDS_FOR_SIGNIFICANCE seeds:
  with fewer, one seed's luck can decide the sign; the p-value is still computed (numbers.csv).
- Ranking: Friedman test over (dataset, site) blocks of the mean Dice, Nemenyi post-hoc test
  (scikit-posthocs) and the Nemenyi critical difference (Demsar 2006).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedicra.errors import UserError

LOWER_IS_BETTER = {"hd95", "assd"}
MIN_SEEDS_FOR_SIGNIFICANCE = 3   # a table claims significance only where both methods ran this many seeds
WILCOXON_TEST = "two-sided Wilcoxon signed-rank test"


def structures(cases: pd.DataFrame) -> list[str]:
    """Foreground structures named by the `dice_<s>` columns that hold values (FAZ: faz; ODOC: cup, disc).

    Tables that mix tasks carry every task's columns; a column that is empty in `cases` is not a structure there.
    """
    return [c[len("dice_"):] for c in cases.columns if c.startswith("dice_") and cases[c].notna().any()]


def select_protocol(cases: pd.DataFrame, model: str, selection: str) -> pd.DataFrame:
    """Rows of one evaluation protocol (which model, which round selection)."""
    picked = cases[(cases["model"] == model) & (cases["selection"] == selection)]
    if picked.empty:
        have = sorted(set(zip(cases["model"], cases["selection"])))
        raise UserError(f"report: no results for model={model} selection={selection} (available: {have})")
    return picked


@dataclass(frozen=True)
class Column:
    metric: str       # dice | hd95 | ...
    structure: str    # faz | cup | disc
    site: str | None  # site name, None for the average over sites

    @property
    def lower_is_better(self) -> bool:
        return self.metric in LOWER_IS_BETTER


def _column_values(cases: pd.DataFrame, col: Column) -> pd.DataFrame:
    """Per-case values for one column with the pairing keys: method, seed, site_name, case, value."""
    frame = cases if col.site is None else cases[cases["site_name"] == col.site]
    out = frame[["method", "seed", "site_name", "case"]].copy()
    out["value"] = frame[f"{col.metric}_{col.structure}"].astype(float)
    return out


def _per_seed(values: pd.DataFrame) -> pd.Series:
    """method, seed -> mean over cases (site column) or mean over sites of site means (average column)."""
    site_means = values.groupby(["method", "seed", "site_name"])["value"].mean()
    return site_means.groupby(["method", "seed"]).mean()


def wilcoxon_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired samples; 1.0 when every difference is zero."""
    from scipy.stats import wilcoxon

    diff = np.asarray(a, float) - np.asarray(b, float)
    diff = diff[np.isfinite(diff)]
    if diff.size == 0 or not np.any(diff != 0):
        return 1.0
    return float(wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)


def seed_averaged_pairs(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Per test case (site_name, case), the `value` of `a` and `value_best` of `b`, each averaged over the
    seeds both ran: one pair per case however many seeds there are."""
    paired = a.merge(b, on=["seed", "site_name", "case"], suffixes=("", "_best"))
    return paired.groupby(["site_name", "case"])[["value", "value_best"]].mean().reset_index()


def compare_methods(cases: pd.DataFrame, metrics=("dice", "hd95"), alpha: float = 0.05) -> pd.DataFrame:
    """One row per (column, method): mean, std, n_seeds, best flag, p-value against the best, significance,
    and whether the method is a full-mask reference (never the best, not tested).

    `cases` holds one dataset, one assignment and one protocol (see `select_protocol`).
    """
    from fedicra.report.diagnostics import competitors, full_mask_methods

    references = set(full_mask_methods(cases))
    sites = sorted(cases["site_name"].unique(), key=natural_key)
    rows = []
    for metric in metrics:
        for structure in structures(cases):
            for site in [*sites, None]:
                col = Column(metric, structure, site)
                values = _column_values(cases, col)
                per_seed = _per_seed(values)
                stats = per_seed.groupby("method").agg(["mean", "std", "count"])
                means = stats["mean"].dropna()
                if means.empty:
                    continue
                competing = competitors(means, references)
                best = competing.idxmin() if col.lower_is_better else competing.idxmax()
                best_vals = values[values["method"] == best]
                for method, row in stats.iterrows():
                    p = float("nan")
                    if method != best and method in competing.index:
                        paired = seed_averaged_pairs(values[values["method"] == method], best_vals)
                        p = wilcoxon_p(paired["value"], paired["value_best"])
                    rows.append({
                        "metric": metric, "structure": structure, "site": site, "method": method,
                        "mean": row["mean"], "std": row["std"] if row["count"] > 1 else float("nan"),
                        "n_seeds": int(row["count"]),
                        "is_best": method in competing.index and bool(np.isclose(row["mean"], competing[best])),
                        "p_vs_best": p, "reference": method in references,
                        "significant": bool(p < alpha and min(row["count"], stats.loc[best, "count"])
                                            >= MIN_SEEDS_FOR_SIGNIFICANCE),
                    })
    return pd.DataFrame(rows)


@dataclass
class RankingResult:
    matrix: pd.DataFrame        # blocks (dataset, site) x methods, mean Dice
    statistic: float            # Friedman chi-square
    pvalue: float
    ranks: pd.Series            # average rank per method (1 = best)
    nemenyi: pd.DataFrame       # pairwise Nemenyi p-values
    critical_difference: float  # Nemenyi CD at alpha
    alpha: float
    dropped_methods: list[str]


def friedman_nemenyi(cases: pd.DataFrame, metric: str = "mean_dice", alpha: float = 0.05) -> RankingResult | None:
    """Friedman + Nemenyi over (dataset, site) blocks; None when fewer than 3 methods or 2 blocks remain.

    Methods missing from any dataset are dropped (listed in `dropped_methods`) so blocks stay complete.
    """
    import scikit_posthocs as sp
    from scipy.stats import friedmanchisquare, studentized_range

    block_means = cases.groupby(["dataset", "site_name", "method"])[metric].mean()
    matrix = block_means.unstack("method")
    complete = matrix.columns[matrix.notna().all()]
    dropped = sorted(set(matrix.columns) - set(complete))
    matrix = matrix[sorted(complete)].dropna()
    k, n = matrix.shape[1], matrix.shape[0]
    if k < 3 or n < 2:
        return None
    higher_better = metric not in {f"mean_{m}" for m in LOWER_IS_BETTER}
    statistic, pvalue = friedmanchisquare(*(matrix[c].to_numpy() for c in matrix.columns))
    ranks = matrix.rank(axis=1, ascending=not higher_better).mean().sort_values()
    # Nemenyi on the block x method table; negate when lower is better so rank 1 stays the best
    nemenyi = sp.posthoc_nemenyi_friedman((matrix if higher_better else -matrix).to_numpy())
    nemenyi.index = nemenyi.columns = list(matrix.columns)
    q_alpha = studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    cd = q_alpha * math.sqrt(k * (k + 1) / (6.0 * n))
    return RankingResult(matrix=matrix, statistic=float(statistic), pvalue=float(pvalue), ranks=ranks,
                         nemenyi=nemenyi, critical_difference=float(cd), alpha=alpha, dropped_methods=dropped)


def natural_key(name: str):
    """Sort Domain2 before Domain10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(name))]

