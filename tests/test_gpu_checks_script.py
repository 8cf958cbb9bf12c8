"""benchmarks/gpu_checks.sh on a machine without a GPU: it runs its CPU-side check, writes the one
results file and exits with status 1 and a message saying that no GPU was found."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path; on a GPU the script measures")
def test_gpu_checks_without_a_gpu_records_the_cpu_parts_and_says_so(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    env.pop("OUT", None)
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_checks.sh"), str(tmp_path / "out")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 1, done.stderr
    assert "no CUDA GPU" in done.stderr
    record = json.loads((tmp_path / "out" / "gpu_checks.json").read_text())
    assert record["checks"]["environment"]["cuda_available"] is False
    assert record["checks"]["trees_cpu_only"]["all_identical"] is True
    assert "no_gpu" in record
    assert not list((tmp_path / "out").glob("*.tmp"))
