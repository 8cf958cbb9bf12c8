"""The two-command setup: `make reproduce` and `make test` (checked with `make -n`, nothing installed)."""
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_n(*args: str) -> list[str]:
    result = subprocess.run(["make", "-n", "-C", str(REPO), *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line.strip() and not line.startswith("make")]


def test_fresh_machine_installs_cpu_torch_first_then_pinned_package(tmp_path):
    for target in ("reproduce", "test"):
        lines = make_n(target, f"VENV={tmp_path / 'venv'}")
        joined = "\n".join(lines)
        torch = next(i for i, line in enumerate(lines) if "pip install" in line and "torch==2.13.0" in line)
        package = next(i for i, line in enumerate(lines) if "-c constraints.txt -e \".[test]\"" in line)
        assert lines[0].endswith(f"-m venv {tmp_path / 'venv'}") and torch < package
        assert "--index-url" not in joined and "cu1" not in joined  # never a CUDA wheel index
    assert make_n("reproduce", f"VENV={tmp_path / 'venv'}")[-1].endswith("snakemake --cores all ")


def test_installed_environment_runs_offline_without_reinstalling(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".fedicra-installed").touch()
    os.utime(venv / ".fedicra-installed", (2**31 - 1, 2**31 - 1))  # newer than pyproject/constraints
    lines = make_n("test", f"VENV={venv}")
    assert not any("pip" in line for line in lines)
    test_command = " ".join(lines)
    for setting in ("FLWR_TELEMETRY_ENABLED=0", "FLWR_DISABLE_UPDATE_CHECK=1", "MPLBACKEND=Agg",
                    'FLWR_HOME="$scratch/flwr"', 'MPLCONFIGDIR="$scratch/mpl"', "python -m pytest"):
        assert setting in test_command
    assert f"PATH=\"{venv}/bin:" in test_command
    (run,) = make_n("reproduce", f"VENV={venv}", "SNAKEMAKE_ARGS=--configfile config/smoke.yaml")
    assert run.endswith("snakemake --cores all --configfile config/smoke.yaml")


def test_ci_runs_make_test():
    ci = (REPO / ".ci/run").read_text()
    assert "make test VENV=.venv-ci" in ci
