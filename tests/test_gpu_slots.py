"""GPU slot allocator: distinct slots for concurrent holders, release on exit, CPU fallback."""
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fedicra.errors import UserError
from fedicra.gpu_slots import SlotAllocator, main, parse_gpus

REPO = Path(__file__).resolve().parents[1]


def test_concurrent_holders_get_distinct_slots_spread_over_gpus(tmp_path):
    alloc = SlotAllocator(["0", "1"], runs_per_gpu=2, lock_dir=tmp_path)
    held, barrier, lock = [], threading.Barrier(4), threading.Lock()

    def hold():
        with alloc.acquire(timeout=10, poll=0.01) as slot:
            with lock:
                held.append((slot.gpu, slot.index))
            barrier.wait(timeout=10)  # all four hold a slot at the same time

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(held) == [("0", 0), ("0", 1), ("1", 0), ("1", 1)]


def test_first_slots_spread_before_packing_and_release_on_exit(tmp_path):
    alloc = SlotAllocator(["0", "1"], runs_per_gpu=2, lock_dir=tmp_path)
    with alloc.acquire() as a, alloc.acquire() as b:
        assert {a.gpu, b.gpu} == {"0", "1"} and a.index == b.index == 0
    with alloc.acquire() as again:
        assert (again.gpu, again.index) == ("0", 0)  # released slots are reused


def test_waits_then_times_out_when_all_slots_busy(tmp_path):
    alloc = SlotAllocator(["3"], runs_per_gpu=1, lock_dir=tmp_path)
    with alloc.acquire():
        start = time.monotonic()
        with pytest.raises(UserError, match="no free GPU slot within 0.2 s"):
            with alloc.acquire(timeout=0.2, poll=0.05):
                pass
        assert time.monotonic() - start >= 0.2


def test_lock_is_released_when_holder_process_dies(tmp_path):
    code = ("import sys, time; from fedicra.gpu_slots import SlotAllocator\n"
            f"a = SlotAllocator(['0'], 1, {str(tmp_path)!r})\n"
            "with a.acquire():\n    print('held', flush=True); time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    alloc = SlotAllocator(["0"], 1, tmp_path)
    with pytest.raises(UserError):
        with alloc.acquire(timeout=0.1, poll=0.02):
            pass
    child.kill()
    child.wait()
    with alloc.acquire(timeout=5, poll=0.02) as slot:
        assert slot.gpu == "0"


def test_cpu_fallback_and_wrapped_command_environment(tmp_path, capfd):
    assert parse_gpus("none") == [] and parse_gpus("0,2") == ["0", "2"]
    with SlotAllocator([], lock_dir=tmp_path).acquire() as slot:
        assert slot.gpu is None and slot.cuda_visible_devices == ""
    show = [sys.executable, "-c", "import os; print('CVD=' + repr(os.environ['CUDA_VISIBLE_DEVICES']))"]
    assert main(["--gpus", "none", "--lock-dir", str(tmp_path), "--", *show]) == 0
    assert "CVD=''" in capfd.readouterr().out
    assert main(["--gpus", "5", "--lock-dir", str(tmp_path), "--", *show]) == 0
    assert "CVD='5'" in capfd.readouterr().out
    assert main(["--gpus", "none", "--", sys.executable, "-c", "raise SystemExit(3)"]) == 3


def test_auto_uses_cuda_visible_devices_and_bad_input(monkeypatch, capfd):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert parse_gpus("auto") == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert parse_gpus("auto") == []
    with pytest.raises(UserError, match="--gpus"):
        parse_gpus("first")
    assert main(["--gpus", "none"]) == 2
    assert "no command given" in capfd.readouterr().err
    with pytest.raises(UserError, match="--runs-per-gpu"):
        SlotAllocator(["0"], runs_per_gpu=0)


def _smoke_with_gpus(tmp_path, devices: str, runs_per_gpu: int) -> Path:
    import yaml
    config = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    config["gpus"] = {"devices": devices, "runs_per_gpu": runs_per_gpu, "lock_dir": str(tmp_path / "locks")}
    config["methods"], config["variants"], config["assignments"] = ["local"], {}, ["upstream"]
    path = tmp_path / "gpus.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _snakemake(tmp_path, env_extra: dict, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(XDG_CACHE_HOME=str(tmp_path / ".cache"), MPLCONFIGDIR=str(tmp_path / ".mpl"), MPLBACKEND="Agg",
               PYTHONPATH=str(REPO), **env_extra)
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "Snakefile"),
           "--directory", str(tmp_path), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_workflow_with_auto_hands_out_faked_gpus_and_falls_back_to_cpu(tmp_path):
    config = _smoke_with_gpus(tmp_path, "auto", runs_per_gpu=2)
    run = "results/smoke/runs/smoke-faz/upstream/local/seed0/summary.json"
    # A faked GPU list: two GPUs x 2 slots; the training job is wrapped by the allocator and runs on GPU 0.
    gpus = _snakemake(tmp_path, {"CUDA_VISIBLE_DEVICES": "0,1"}, run, "--cores", "1", "--configfile", str(config))
    assert gpus.returncode == 0, gpus.stderr[-3000:]
    assert "4 local GPU slots (gpus.devices: auto)" in gpus.stderr
    log = (tmp_path / "results/smoke/logs/train/smoke-faz/upstream/local/seed0.log").read_text()
    assert "gpu_slots: running on GPU 0 slot 0" in log
    assert re.search(r"resources:.*\bgpu=1\b", gpus.stdout + gpus.stderr)
    # No GPU visible (an empty CUDA_VISIBLE_DEVICES; nvidia-smi is not consulted then): the same config
    # runs the job on the CPU, although it still counts one (unlimited) `gpu` for cluster executors.
    (tmp_path / run).unlink()
    cpu = _snakemake(tmp_path, {"CUDA_VISIBLE_DEVICES": ""}, run, "--cores", "1", "--configfile", str(config))
    assert cpu.returncode == 0, cpu.stderr[-3000:]
    assert "no local GPU slots (gpus.devices: auto); local jobs train on the CPU" in cpu.stderr
    log = (tmp_path / "results/smoke/logs/train/smoke-faz/upstream/local/seed0.log").read_text()
    assert "gpu_slots: running on CPU (no GPU)" in log


def test_auto_asks_nvidia_smi_when_cuda_visible_devices_is_unset(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nprintf '0\\n1\\n2\\n'\n")
    fake.chmod(0o755)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    assert parse_gpus("auto") == ["0", "1", "2"]
    assert len(SlotAllocator(parse_gpus("auto"), runs_per_gpu=2).slots) == 6
