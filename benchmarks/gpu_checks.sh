#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one script (for a machine with a GPU and this repo installed):
# the CPU-vs-GPU agreement tests of the tree filter, the tree-energy benchmark, and one FedICRA step
# against one pCE step at the paper's 256 px, batch 12. Prints everything; writes $OUT/gpu_checks.log
# when OUT is set.
set -uo pipefail
cd "$(dirname "$0")/.."
log="${OUT:-/tmp}/gpu_checks.log"
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total --format=csv
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  python -m pytest -q tests/test_losses_tree_filter.py tests/test_losses_tree_energy.py -k "cuda or gpu or triton" -rs
  python benchmarks/bench_tree_filter.py
  python benchmarks/bench_fedicra_step.py --device cuda --size 256 --batch-size 12 --repeats 5
} 2>&1 | tee "$log"
