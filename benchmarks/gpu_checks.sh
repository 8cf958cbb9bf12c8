#!/usr/bin/env bash
# Every check that needs a CUDA GPU, as one command; all numbers go to ONE file, DIR/gpu_checks.json
# (DIR: the first argument, else $OUT, else ./gpu-checks). See benchmarks/gpu_checks.py for the list.
# Each check fails soft (its error is recorded, the rest still run). Exit status 1 without a GPU.
#   [PYTHON=.venv/bin/python] benchmarks/gpu_checks.sh [DIR]
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-${OUT:-gpu-checks}}"
mkdir -p "$dir"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg \
  FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
export FLWR_HOME="${FLWR_HOME:-$(mktemp -d)}" MPLCONFIGDIR="${MPLCONFIGDIR:-$(mktemp -d)}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
cd "$repo" && exec timeout 470 "${PYTHON:-python}" benchmarks/gpu_checks.py --out "$dir"
