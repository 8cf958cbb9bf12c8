"""GPU slot allocator: distinct slots for concurrent holders, release on exit, CPU fallback."""
import os
import subprocess
import sys
import threading
import time

import pytest

from fedicra.errors import UserError
from fedicra.gpu_slots import SlotAllocator, main, parse_gpus


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
