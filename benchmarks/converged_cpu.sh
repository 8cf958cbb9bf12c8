#!/usr/bin/env bash
# The converged CPU comparison of issue 9 item 7: FedAvg, FedALA, MetaFed, FedAP, FedICRA and the fully
# supervised upper bound x 3 seeds on synthetic FAZ at 64 px (config/converged-cpu.yaml), on this
# machine's cores. Prints the wall time, each run's resolved schedule values and gradient steps per
# site, and the per-site test Dice (personalized model, best on validation; mean +- std over seeds).
# Long (about 3 hours on 2 quiet cores at 240 rounds x 10 steps; 96 min at 120 x 10): run it in a quiet window. To ask whether
# twice the budget changes the result, keep a finished results folder and compare: benchmarks/budget_doubling.py.
#   benchmarks/converged_cpu.sh            # run, then summarise
#   benchmarks/converged_cpu.sh --dry-run  # show the jobs only
#   benchmarks/converged_cpu.sh --summary  # summarise finished runs again
set -euo pipefail
cd "$(dirname "$0")/.."
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1
config=config/converged-cpu.yaml
cores="${CORES:-$(nproc)}"
case "${1:-}" in
  --dry-run) exec snakemake --configfile "$config" --cores "$cores" -n -q ;;
  --summary) ;;
  "") start=$(date +%s)
      snakemake --configfile "$config" --cores "$cores"
      echo "wall time: $(( $(date +%s) - start )) s for the whole workflow on $cores cores" ;;
  *) echo "usage: $0 [--dry-run|--summary]" >&2; exit 2 ;;
esac
python - <<'PY'
import json
from pathlib import Path

import pandas as pd

runs = sorted(Path("results/converged-cpu/runs").glob("*/*/*/seed*"))
if not runs:
    raise SystemExit("no finished runs under results/converged-cpu/runs")
rows, frames = [], []
for run in runs:
    if not (run / "summary.json").is_file():
        continue
    summary = json.loads((run / "summary.json").read_text())
    resolved = json.loads((run / "config.json").read_text()).get("resolved", {})
    method, seed = run.parts[-2], run.parts[-1]
    rows.append({"method": method, "seed": seed, "wall_s": round(summary["wall_clock_s"]),
                 "gradient_steps": summary.get("gradient_steps"), **resolved.get("method_params", {}),
                 "objective": resolved.get("objective"), "crf_radius": resolved.get("gated_crf_radius")})
    cases = pd.read_csv(run / "cases.csv")
    cases = cases[(cases["model"] == "personalized") & (cases["selection"] == "best_val")]
    frames.append(cases.assign(method=method, seed=seed))
pd.set_option("display.width", 200)
print(pd.DataFrame(rows).to_string(index=False))
cases = pd.concat(frames)
per_seed = cases.groupby(["method", "site", "seed"])["mean_dice"].mean()
table = per_seed.groupby(["method", "site"]).agg(["mean", "std"]).unstack("site")
print("\ntest Dice per site (mean over seeds; std over seeds):")
print(table.round(3).to_string())
PY
