"""Does a larger budget change the result? The same methods and seeds run at two budgets, compared.

The convergence diagnostic of the report (`fedicra.report.diagnostics`) reads one run's validation
curve; this script asks the question a reader cares about directly: with twice the gradient steps,
does the test Dice move? For every method and seed present in both result folders it pairs the
per-case test Dice (personalized model; `best_val` and `last` selection) and prints per method the
mean over seeds at each budget, the change, its spread over seeds and two tests (scipy), next to each
run's convergence flag: a two-sided paired t-test over seeds (`seeds_p`: is the change larger than the
seed-to-seed spread? NaN with one seed) and a two-sided Wilcoxon signed-rank test over the test cases,
each case's change averaged over seeds first (`cases_p`: the cases are the independent units; it does
not see the seed spread, so it alone overstates the evidence when seeds disagree).

    python benchmarks/budget_doubling.py results/converged-cpu-600 results/converged-cpu
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from scipy import stats

from fedicra import record
from fedicra.report import diagnostics


def runs_of(results: Path) -> dict[tuple[tuple[str, str, str], str], Path]:
    """((dataset, assignment, method), seed) -> run folder of every finished run under `results`/runs;
    the dataset and assignment are part of the key, so two datasets' runs of one method never collide."""
    return {(run.parts[-4:-1], run.parts[-1]): run
            for run in sorted((results / "runs").glob("*/*/*/seed*")) if (run / record.SUMMARY).is_file()}


def budget_of(run: Path) -> int:
    """Most gradient steps any site took (summary.json keeps them per site)."""
    return max(record.read_summary(run)["gradient_steps"].values())


FLAG_WORDS = {"converged": "ok", "not converged": "rising"}   # short words: one per seed in a cell


def flag_of(run: Path) -> str:
    rounds = record.read_rounds(run)
    flag = diagnostics.convergence_flag(diagnostics.convergence_gain(rounds), diagnostics.convergence_p(rounds))
    return FLAG_WORDS.get(flag, "unknown")


def test_dice(run: Path, selection: str) -> pd.Series:
    cases = record.read_cases(run)
    cases = cases[(cases["model"] == "personalized") & (cases["selection"] == selection)]
    return cases.set_index(["site", "case"])["mean_dice"]


def compare(small: Path, large: Path, selection: str) -> pd.DataFrame:
    a, b = runs_of(small), runs_of(large)
    rows = []
    for group in sorted({g for g, _ in a} & {g for g, _ in b}):
        seeds = sorted(s for g, s in a if g == group and (g, s) in b)
        pairs = [(test_dice(a[group, s], selection), test_dice(b[group, s], selection)) for s in seeds]
        per_seed = pd.DataFrame({"small": [x.mean() for x, _ in pairs], "large": [y.mean() for _, y in pairs]})
        case_change = pd.concat([(y - x) for x, y in pairs]).groupby(level=["site", "case"]).mean()
        dataset, assignment, method = group
        rows.append({
            "dataset": dataset, "assignment": assignment, "method": method, "seeds": len(seeds),
            "steps": f"{budget_of(a[group, seeds[0]])} -> {budget_of(b[group, seeds[0]])}",
            "dice_small": 100 * per_seed["small"].mean(), "dice_large": 100 * per_seed["large"].mean(),
            "change": 100 * (per_seed["large"] - per_seed["small"]).mean(),
            "change_std": 100 * (per_seed["large"] - per_seed["small"]).std(),
            "seeds_p": stats.ttest_rel(per_seed["large"], per_seed["small"]).pvalue if len(seeds) > 1 else float("nan"),
            "cases_p": stats.wilcoxon(case_change.to_numpy()).pvalue if (case_change != 0).any() else 1.0,
            "flags_small": "/".join(flag_of(a[group, s]) for s in seeds),
            "flags_large": "/".join(flag_of(b[group, s]) for s in seeds),
        })
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("small", type=Path, help="results folder of the smaller budget")
    parser.add_argument("large", type=Path, help="results folder of the larger budget")
    args = parser.parse_args(argv)
    for selection in ("best_val", "last"):
        table = compare(args.small, args.large, selection)
        if table.empty:
            raise SystemExit(f"{args.small} and {args.large}: no method and seed finished in both")
        print(f"\ntest Dice (%), personalized model, selection {selection}; change = larger - smaller budget, "
              "mean (std) over seeds; seeds_p: paired t-test over seeds; cases_p: Wilcoxon over the test cases, each "
              "averaged over seeds (the seed spread is not in it); flags per seed, report's convergence rule (ok / rising)")
        print(table.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
