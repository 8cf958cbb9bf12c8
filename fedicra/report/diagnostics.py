"""Honesty checks a reader needs before trusting a table: convergence, bounds beaten, no-effect methods.

- Convergence: the validation mean Dice (mean over sites) gained over the last quarter of the
  rounds, estimated as the mean over the last quarter of the evaluated rounds minus the mean over
  the quarter before it. Window means, not two single rounds: a validation split of a few cases per
  site moves by several Dice points from round to round, so a difference of two single rounds
  flags plateaued runs at random. A run whose gain exceeds `CONVERGED_GAIN` (0.01 = one Dice point)
  and is not noise (one-sided Welch t-test of the two quarters, p < `CONVERGED_ALPHA`; runs with
  fewer than `MIN_TEST_ROUNDS` evaluated rounds per quarter are judged by the gain alone) may still
  have been learning when it stopped; one without validation scores (val_fraction 0) cannot be judged.
  Rounds are autocorrelated, so the test overstates the evidence: it errs towards "not converged".
  Under a learning rate that decays to zero over the run a plateaued run can gain late too; whether
  more budget helps is answered only by the same runs at two budgets (`benchmarks/budget_doubling.py`).
  The round of the validation peak is kept beside it (`peak_round`), and the site whose own validation
  Dice gained most over the same quarters (`largest_site_gain`): the mean over sites can hide one site
  still learning while another declines, and personalized models are selected per site.
- Upper bound: `centralized_full` (pooled training on full masks) bounds what weak labels can
  reach; a method whose mean Dice beats it by more than the spread over seeds is flagged.
- Identical methods: two methods whose per-case numbers are equal everywhere, i.e. one mechanism
  had no measurable effect.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from fedicra.data.manifest import FULL_LABEL

CONVERGED_GAIN = 0.01
CONVERGED_ALPHA = 0.05
MIN_TEST_ROUNDS = 5     # evaluated rounds per quarter below which the test has no power: the gain decides
UPPER_BOUND = "centralized_full"


def _validation_curve(rounds: pd.DataFrame) -> pd.Series:
    """Validation mean Dice (mean over sites) per evaluated round, in round order."""
    return _validation_rows(rounds).groupby("round")["mean_dice"].mean().sort_index()


def _validation_rows(rounds: pd.DataFrame) -> pd.DataFrame:
    """Per-site rows of `rounds.csv` that hold a validation score."""
    return rounds[(rounds["site"] >= 0) & rounds["mean_dice"].notna()]


def _last_quarters(rounds: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """Validation mean Dice (mean over sites) of the last quarter of the evaluated rounds and of the
    quarter before it (a quarter is at least one round); None when fewer than two rounds were evaluated."""
    return _quarters(_validation_curve(rounds).to_numpy())


def _quarters(curve: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    if len(curve) < 2:
        return None
    quarter = max(1, len(curve) // 4)
    return curve[-quarter:], curve[-2 * quarter:-quarter]


def convergence_gain(rounds: pd.DataFrame) -> float:
    """Mean validation Dice over the last quarter of the evaluated rounds minus over the quarter before it."""
    windows = _last_quarters(rounds)
    return float("nan") if windows is None else float(windows[0].mean() - windows[1].mean())


def convergence_p(rounds: pd.DataFrame) -> float:
    """One-sided Welch t-test that the last quarter's validation Dice is higher than the quarter before
    (scipy); NaN with fewer than MIN_TEST_ROUNDS evaluated rounds per quarter (a short run's gain is
    judged alone, not excused by a test without power) or no spread."""
    from scipy import stats

    windows = _last_quarters(rounds)
    if windows is None or min(len(w) for w in windows) < MIN_TEST_ROUNDS:
        return float("nan")
    with np.errstate(all="ignore"):
        return float(stats.ttest_ind(*windows, equal_var=False, alternative="greater").pvalue)


def largest_site_gain(rounds: pd.DataFrame) -> tuple[int | None, float]:
    """(site, gain): the site whose validation mean Dice gained most from the quarter before the last to
    the last quarter of its evaluated rounds (window means, as `convergence_gain`); (None, NaN) without
    validation scores."""
    gains = {}
    for site, part in _validation_rows(rounds).groupby("site"):
        windows = _quarters(part.sort_values("round")["mean_dice"].to_numpy())
        if windows is not None:
            gains[int(site)] = float(windows[0].mean() - windows[1].mean())
    if not gains:
        return None, float("nan")
    site = max(gains, key=gains.get)
    return site, gains[site]


def peak_round(rounds: pd.DataFrame) -> float:
    """The evaluated round of the highest validation mean Dice (NaN without validation scores). Read with
    the gain: a run that peaked long before its last round and sits below the peak has declined (over-fit
    its sparse labels, or drifted), which more rounds do not mend."""
    curve = _validation_curve(rounds)
    return float(curve.idxmax()) if len(curve) else float("nan")


def convergence_flag(gain: float, p: float = float("nan")) -> str:
    """`not converged` when the gain exceeds CONVERGED_GAIN and is not noise (p < CONVERGED_ALPHA; a
    run too short to test is judged by its gain alone)."""
    if not np.isfinite(gain):
        return "unknown (no validation split)"
    rising = gain > CONVERGED_GAIN and not (np.isfinite(p) and p >= CONVERGED_ALPHA)
    return "not converged" if rising else "converged"


def convergence_flags(runs: pd.DataFrame) -> pd.Series:
    """`convergence_flag` of every row of a collected runs table."""
    return pd.Series([convergence_flag(g, p) for g, p in zip(runs["convergence_gain"], runs["convergence_p"])],
                     index=runs.index, dtype=object)


def identical_methods(cases: pd.DataFrame) -> list[tuple[str, str]]:
    """Pairs of methods (same dataset, assignment, seeds, cases) whose per-case mean Dice is identical."""
    keys = ["dataset", "assignment", "seed", "site", "case", "model", "selection"]
    pairs = []
    for _, part in cases.groupby(["dataset", "assignment"]):
        table = part.pivot_table(index=keys[2:], columns="method", values="mean_dice", aggfunc="first")
        methods = sorted(table.columns)
        for i, a in enumerate(methods):
            for b in methods[i + 1:]:
                both = table[[a, b]].dropna()
                if len(both) and np.array_equal(both[a].to_numpy(), both[b].to_numpy()):
                    pairs.append((a, b))
    return sorted(set(pairs))


def beats_upper_bound(cases: pd.DataFrame) -> list[dict]:
    """Methods whose mean Dice exceeds `centralized_full` by more than the larger seed std of the two.

    `cases` holds one protocol (model, selection). One entry per (dataset, assignment, method).
    """
    found = []
    per_seed = cases.groupby(["dataset", "assignment", "method", "seed"])["mean_dice"].mean()
    for (dataset, assignment), part in per_seed.groupby(level=["dataset", "assignment"]):
        by_method = part.groupby(level="method")
        if UPPER_BOUND not in by_method.groups:
            continue
        bound = by_method.get_group(UPPER_BOUND)
        for method, values in by_method:
            if method == UPPER_BOUND:
                continue
            spread = np.nanmax([values.std(), bound.std(), 0.0])
            margin = values.mean() - bound.mean()
            if margin > spread:
                found.append({"dataset": dataset, "assignment": assignment, "method": method,
                              "margin": float(margin), "spread": float(spread)})
    return found


def selection_effect(cases: pd.DataFrame, model: str) -> pd.DataFrame:
    """Average test Dice of `model` under every round selection present (record.SELECTIONS), per
    (dataset, assignment, method): per seed the mean over sites of the site means, then mean, std and
    count over seeds; plus `best_val - last` (per seed, then mean and std). A large positive difference
    says the model declined late in training, so the ranking can depend on the selection rule."""
    from fedicra import record

    picked = cases[cases["model"] == model]
    keys = ["dataset", "assignment", "method"]
    per_seed = (picked.groupby(keys + ["selection", "seed", "site"])["mean_dice"].mean()
                .groupby(level=keys + ["selection", "seed"]).mean().unstack("selection"))
    columns = [s for s in record.SELECTIONS if s in per_seed.columns]
    if {"best_val", "last"} <= set(columns):
        per_seed["best_val - last"] = per_seed["best_val"] - per_seed["last"]
        columns.append("best_val - last")
    grouped = per_seed[columns].groupby(level=keys)
    summary = pd.concat({"mean": grouped.mean(), "std": grouped.std(), "n_seeds": grouped.count()}, names=["quantity"])
    # melt keeps a NaN std (one seed) as a row on every pandas version; stack drops it on older ones
    return summary.rename_axis(columns=None).reset_index().melt(id_vars=["quantity", *keys], var_name="column",
                                                                value_name="value")


def full_mask_methods(cases: pd.DataFrame) -> list[str]:
    """Methods that trained on full masks at every site whatever the assignment (`centralized_full`), while
    others trained on weak labels: their rows say nothing about the label kinds an assignment gave."""
    full = cases["label"] == FULL_LABEL
    if full.all():
        return []
    return sorted(set(cases.loc[full, "method"]) - set(cases.loc[~full, "method"]))


def _not_references(methods, references) -> np.ndarray:
    """Mask of the entries of `methods` that are not full-mask references; all True if nothing else is left."""
    keep = ~pd.Index(methods).isin(list(references))
    return keep if keep.any() else np.ones(len(keep), dtype=bool)


def competitors(by_method, references):
    """`by_method` (indexed by method) without the full-mask references: the rows that may be a column's best."""
    return by_method[_not_references(by_method.index, references)]


def assignment_rows(cases: pd.DataFrame) -> pd.DataFrame:
    """The rows whose training label is the one the assignment gave (all rows if no other method ran)."""
    return cases[_not_references(cases["method"], full_mask_methods(cases))]


def separates_label_kind(cases: pd.DataFrame) -> bool:
    """True when, in every dataset, every site trains with several label kinds across assignments and every
    label kind is used at two sites or more (rotations, a Latin square). With one assignment site and
    label kind are the same factor and the label-kind analysis would only relabel sites. The full-mask
    bound's rows do not count: it trains on masks at every site whatever the assignment."""
    pairs = assignment_rows(cases).drop_duplicates(["dataset", "site_name", "label"])
    for _, part in pairs.groupby("dataset"):
        if part.groupby("site_name")["label"].nunique().min() < 2 or part.groupby("label")["site_name"].nunique().min() < 2:
            return False
    return not pairs.empty


def label_kind_effect(cases: pd.DataFrame) -> pd.DataFrame:
    """Mean Dice per (dataset, method, label kind), averaged first over seeds within each site, then over
    sites, so the label kind's effect is not a site's difficulty. Also the number of sites it rests on."""
    per_site = cases.groupby(["dataset", "method", "label", "site_name", "seed"])["mean_dice"].mean()
    per_site = per_site.groupby(level=["dataset", "method", "label", "site_name"]).mean()
    grouped = per_site.groupby(level=["dataset", "method", "label"])
    return pd.DataFrame({"mean_dice": grouped.mean(), "std_over_sites": grouped.std(),
                         "sites": grouped.size()}).reset_index()
