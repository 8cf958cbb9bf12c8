"""GPU slot allocator: give each local job a GPU id, packing `runs_per_gpu` jobs per GPU.

Snakemake counts `resources: gpu` but never says WHICH device a job should use (snakemake issue
#281). Each slot is a lock file `gpu<id>-slot<k>.lock` in a lock folder; a job holds an exclusive
`fcntl.flock` on one of them while it runs. The kernel drops the lock when the process exits, even
after a crash or `kill -9`, so slots never leak. Slots are tried slot-index-major (every GPU's first
slot before any second slot) so load spreads across GPUs before runs are packed.

With no GPU the allocator hands out a CPU slot: the command runs with `CUDA_VISIBLE_DEVICES=""`.

Command line (wraps one command, returns its exit status):

    python -m fedicra.gpu_slots --gpus auto --runs-per-gpu 2 --lock-dir /tmp/slots -- fedicra run ...
"""
from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fedicra.errors import UserError, run_cli


@dataclass(frozen=True)
class Slot:
    gpu: str | None   # device id as CUDA_VISIBLE_DEVICES spells it; None = CPU
    index: int        # which of the GPU's slots
    lock_path: Path | None

    @property
    def cuda_visible_devices(self) -> str:
        return "" if self.gpu is None else self.gpu


def default_lock_dir() -> Path:
    """Node-local and per user, so jobs of one user on one machine share the slots."""
    return Path(tempfile.gettempdir()) / f"fedicra-gpu-slots-{os.getuid()}"


def detect_gpus() -> list[str]:
    """GPU ids visible to this process: CUDA_VISIBLE_DEVICES if set (e.g. by SLURM), else nvidia-smi."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def parse_gpus(spec: str) -> list[str]:
    """`auto` (detect), `none`/`cpu`/`` (no GPU), or a comma-separated id list such as `0,1`."""
    spec = str(spec).strip().lower()
    if spec == "auto":
        return detect_gpus()
    if spec in ("", "none", "cpu", "0gpus"):
        return []
    ids = [g.strip() for g in spec.split(",")]
    if not all(g.isdigit() or g.startswith(("gpu-", "mig-")) for g in ids):
        raise UserError(f"--gpus: '{spec}' is not auto, none or a comma-separated list of GPU ids")
    return ids


class SlotAllocator:
    def __init__(self, gpus: list[str], runs_per_gpu: int = 1, lock_dir: Path | None = None):
        if runs_per_gpu < 1:
            raise UserError(f"--runs-per-gpu: {runs_per_gpu} must be at least 1")
        self.gpus = list(gpus)
        self.runs_per_gpu = runs_per_gpu
        self.lock_dir = Path(lock_dir) if lock_dir else default_lock_dir()

    @property
    def slots(self) -> list[tuple[str, int]]:
        return [(gpu, k) for k in range(self.runs_per_gpu) for gpu in self.gpus]

    def _try_lock(self, gpu: str, index: int):
        path = self.lock_dir / f"gpu{gpu}-slot{index}.lock"
        handle = open(path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None, path
        handle.seek(0); handle.truncate()
        handle.write(f"{os.getpid()}\n"); handle.flush()
        return handle, path

    @contextmanager
    def acquire(self, timeout: float | None = None, poll: float = 0.5):
        """Hold a free slot for the duration of the block; waits until one frees up.

        Raises UserError after `timeout` seconds without a free slot. No GPU: yields a CPU slot at once.
        """
        if not self.gpus:
            yield Slot(None, 0, None)
            return
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for gpu, index in self.slots:
                handle, path = self._try_lock(gpu, index)
                if handle is not None:
                    try:
                        yield Slot(gpu, index, path)
                    finally:
                        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
                        handle.close()
                    return
            if deadline is not None and time.monotonic() >= deadline:
                raise UserError(f"{self.lock_dir}: no free GPU slot within {timeout:g} s "
                                f"({len(self.slots)} slots busy)")
            time.sleep(poll)


def run_in_slot(command: list[str], allocator: SlotAllocator, timeout: float | None = None) -> int:
    """Run `command` with CUDA_VISIBLE_DEVICES set to the held slot's GPU; return its exit status.

    SIGTERM/SIGINT are forwarded to the child so Snakemake can cancel a job cleanly.
    """
    if not command:
        raise UserError("gpu_slots: no command given after --")
    with allocator.acquire(timeout=timeout) as slot:
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=slot.cuda_visible_devices,
                   FEDICRA_GPU_SLOT="cpu" if slot.gpu is None else f"{slot.gpu}:{slot.index}")
        where = "CPU (no GPU)" if slot.gpu is None else f"GPU {slot.gpu} slot {slot.index}"
        print(f"gpu_slots: running on {where}", file=sys.stderr, flush=True)
        try:
            child = subprocess.Popen(command, env=env)
        except FileNotFoundError:
            raise UserError(f"gpu_slots: command not found: {command[0]}") from None
        previous = {sig: signal.signal(sig, lambda s, _f: child.send_signal(s)) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            return child.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[argv.index("--") + 1:] if "--" in argv else []
    options = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m fedicra.gpu_slots",
                                     description="Run a command on a free GPU slot (CPU when there is no GPU).")
    parser.add_argument("--gpus", default="auto", help="auto | none | comma-separated GPU ids (default auto)")
    parser.add_argument("--runs-per-gpu", type=int, default=1, help="runs packed on one GPU (default 1)")
    parser.add_argument("--lock-dir", default=None, help=f"lock folder (default {default_lock_dir()})")
    parser.add_argument("--timeout", type=float, default=None, help="give up after this many seconds of waiting")
    args = parser.parse_args(options)
    return run_cli(lambda: run_in_slot(command, SlotAllocator(parse_gpus(args.gpus), args.runs_per_gpu, args.lock_dir),
                                        args.timeout))


if __name__ == "__main__":
    sys.exit(main())
