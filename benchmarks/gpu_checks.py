"""Every check that needs a CUDA GPU, recorded to ONE file: `<out>/gpu_checks.json`.

    python benchmarks/gpu_checks.py --out DIR        # or: benchmarks/gpu_checks.sh [DIR]

Checks (each fails soft: its error is recorded and the next one runs; the file is rewritten after
every check, so a killed script still leaves what it measured):
- environment: torch, CUDA, GPU name and memory, Triton;
- trees: the device Boruvka builds exactly the CPU Kruskal trees (random and tie-heavy guides at
  256 px), and the build time of both for a 256 px batch of 12;
- filter: tree filter values and gradients on the GPU against the CPU (both pass backends);
- loss: the multiscale tree energy loss value and gradients on the GPU against the CPU;
- pytest: the CUDA tests of the tree filter;
- steps: FedICRA step / pCE step at 256 px batch 12 in fp32 and bf16 (goal: ratio <= 2.5), with
  the peak GPU memory of each;
- packed: throughput (training steps per second, all runs together) of 1, 2 and 4 real
  `fedicra run` processes sharing the GPU.
Without a CUDA GPU the CPU-side checks still run and the script exits with status 1 and a message.
Each check has a time limit; the limits add up to under 8 minutes.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]  # this checkout's fedicra and benchmark modules


@contextlib.contextmanager
def time_limit(seconds: int):
    def expire(signum, frame):
        raise TimeoutError(f"check exceeded its {seconds} s limit")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


class Record:
    """The results file: one JSON object, rewritten atomically after each check."""

    def __init__(self, path: Path):
        self.path, self.data = path, {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "checks": {}}

    def run(self, name: str, check, limit_s: int, *args) -> None:
        began = time.perf_counter()
        try:
            with time_limit(limit_s):
                result = check(*args)
        except Exception as err:  # fail soft: record and continue
            result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(limit=-3)}
        result["seconds"] = round(time.perf_counter() - began, 2)
        self.data["checks"][name] = result
        status = "ERROR " + result["error"] if "error" in result else "ok"
        print(f"[gpu_checks] {name}: {status} ({result['seconds']} s)", flush=True)
        self.write()

    def write(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        os.replace(tmp, self.path)


def environment() -> dict:
    import torch

    from fedicra.losses.tree_passes_gpu import triton_available

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(), "triton": triton_available(),
            "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_mb=props.total_memory // 2**20,
                    bf16_supported=torch.cuda.is_bf16_supported())
    return info


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn, repeats=3):
    fn()
    _sync()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - began)
    return min(times)


def trees(device: str, size: int = 256) -> dict:
    import torch

    from fedicra.losses import build_spanning_forest

    out = {}
    gen = torch.Generator().manual_seed(0)
    for kind in ("random", "ties"):
        guide = torch.rand(12, 3, size, size, generator=gen)
        if kind == "ties":
            guide = (guide * 2).round() / 2
        cpu = build_spanning_forest(guide, builder="kruskal")
        dev = build_spanning_forest(guide.to(device), builder="boruvka")
        out[f"{kind}_identical"] = {name: bool(torch.equal(getattr(cpu, name), getattr(dev, name).cpu()))
                                    for name in ("parent", "children", "level_start", "num_levels")}
        out[f"{kind}_levels_max"] = int(cpu.num_levels.max())
    guide = torch.rand(12, 3, size, size, generator=gen)
    out[f"kruskal_cpu_s_{size}px_b12"] = _timed(lambda: build_spanning_forest(guide, builder="kruskal"))
    moved = guide.to(device)
    out[f"boruvka_{device}_s_{size}px_b12"] = _timed(lambda: build_spanning_forest(moved, builder="boruvka"))
    out["all_identical"] = all(all(v.values()) for k, v in out.items() if k.endswith("_identical"))
    return out


def _max_diff(a, b):
    return float((a.detach().cpu().double() - b.detach().cpu().double()).abs().max())


def filter_agreement(device: str, size: int = 128) -> dict:
    import torch

    from fedicra.losses import tree_filter
    from fedicra.losses.tree_filter import set_backend
    from fedicra.losses.tree_passes_gpu import triton_available

    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 3, size, size, generator=gen)
    g0 = torch.rand(4, 3, size, size, generator=gen)
    weights = torch.randn(4, 3, size, size, generator=gen)

    def run(dev, backend):
        x = x0.to(dev).requires_grad_()
        g = g0.to(dev).requires_grad_()
        set_backend(backend)
        try:
            y = tree_filter(x, g, 1.0, learn_guide=True)
            (y * weights.to(dev)).sum().backward()
        finally:
            set_backend("auto")
        return y, x.grad, g.grad

    reference = run("cpu", "numba")
    out = {}
    for backend in (["triton"] if triton_available() else []) + ["torch"]:
        got = run(device, backend)
        out[backend] = {name: _max_diff(a, b) for name, a, b in zip(("y", "grad_x", "grad_guide"), reference, got)}
        out[backend]["grad_guide_scale"] = float(reference[2].abs().max())
        out[f"{backend}_fwd_bwd_s_4x{size}px"] = _timed(lambda: run(device, backend), repeats=2)
    out["ok"] = all(v["y"] < 1e-4 and v["grad_x"] < 1e-4 and v["grad_guide"] < 1e-3 * max(1.0, v["grad_guide_scale"])
                    for k, v in out.items() if isinstance(v, dict))
    return out


def loss_agreement(device: str, size: int = 128) -> dict:
    import torch

    from fedicra.losses import tree_energy_loss

    gen = torch.Generator().manual_seed(2)
    batch = 4
    image = torch.rand(batch, 1, size, size, generator=gen)
    logits = torch.randn(batch, 2, size, size, generator=gen)
    aux = [torch.randn(batch, 2, size // f, size // f, generator=gen) for f in (4, 2, 1)]
    labels = torch.randint(0, 3, (batch, size, size), generator=gen)
    labels[torch.rand(batch, size, size, generator=gen) < 0.9] = 2

    def run(dev):
        lg = logits.to(dev).requires_grad_()
        ax = [a.to(dev).requires_grad_() for a in aux]
        loss = tree_energy_loss(lg, image.to(dev), ax, labels.to(dev), ignore_index=2)
        loss.backward()
        return loss.detach(), lg.grad, [a.grad for a in ax]

    cpu, gpu = run("cpu"), run(device)
    out = {"loss_cpu": float(cpu[0]), "loss_gpu": float(gpu[0]),
           "loss_rel_diff": abs(float(cpu[0]) - float(gpu[0])) / max(1e-12, abs(float(cpu[0]))),
           "grad_logits_max_diff": _max_diff(cpu[1], gpu[1]),
           "grad_aux_max_diff": max(_max_diff(a, b) for a, b in zip(cpu[2], gpu[2]))}
    out["ok"] = out["loss_rel_diff"] < 1e-4 and out["grad_logits_max_diff"] < 1e-5
    return out


def gpu_pytest() -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "tests/test_losses_tree_filter.py",
         "tests/test_losses_tree_boruvka.py", "-k", "cuda or triton"],
        cwd=REPO, capture_output=True, text=True, timeout=75)
    return {"returncode": done.returncode, "tail": (done.stdout + done.stderr)[-1500:], "ok": done.returncode == 0}


def steps(device: str, size: int = 256) -> dict:
    from bench_fedicra_step import measure

    out = {}
    for precision in ("fp32", "bf16"):
        out[precision] = measure(device, size=size, batch_size=12, precision=precision, repeats=5)
    out["bf16_over_fp32_fedicra_step"] = out["bf16"]["fedicra_s_median"] / out["fp32"]["fedicra_s_median"]
    out["goal_ratio_at_most_2_5"] = {p: out[p]["ratio_median"] <= 2.5 for p in ("fp32", "bf16")}
    return out


def packed(device: str, work: Path, size: int = 256) -> dict:
    """1, 2 and 4 concurrent `fedicra run` processes (FedICRA, batch 12) on one GPU."""
    from fedicra.data.synth import synthesize

    root = work / f"data{size}"
    if not root.exists():
        synthesize("faz", root, size=size, seed=0, scale=0.25)
    rounds, local_steps, sites = 3, 10, [0, 1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
    threads = max(1, (os.cpu_count() or 4) // 4)
    out = {"method": "fedicra", "precision": "auto (bf16 on CUDA)", "size": size, "batch_size": 12, "rounds": rounds, "local_steps": local_steps,
           "sites": len(sites), "threads_per_run": threads}
    steps_per_run = rounds * local_steps * len(sites)
    for count in (1, 2, 4):
        began = time.perf_counter()
        procs = [subprocess.Popen(
            [sys.executable, "-m", "fedicra", "run", "-o", str(work / f"packed{count}-{i}"),
             "--set", f"dataset={root}", "--set", "method=fedicra", "--set", f"rounds={rounds}",
             "--set", f"local_steps={local_steps}", "--set", "batch_size=12", "--set", f"sites={sites}",
             "--set", f"device={device}", "--set", f"threads={threads}", "--set", "progress=false",
             "--set", f"seed={i}"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True) for i in range(count)]
        errors = []
        try:
            for p in procs:
                _, err = p.communicate(timeout=max(1.0, began + 55 - time.perf_counter()))
                if p.returncode:
                    errors.append(err.strip().splitlines()[-1] if err.strip() else f"exit {p.returncode}")
        finally:  # a timeout (or the check's time limit) must not leave runs behind
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        wall = time.perf_counter() - began
        summaries = [json.loads((work / f"packed{count}-{i}" / "summary.json").read_text())
                     for i in range(count) if (work / f"packed{count}-{i}" / "summary.json").exists()]
        out[f"runs_{count}"] = {
            "wall_s": wall, "steps_per_s": count * steps_per_run / wall,
            "rounds_wall_s": [s["rounds_wall_clock_s"] for s in summaries],
            "train_steps_per_s": (sum(steps_per_run / s["rounds_wall_clock_s"] for s in summaries)
                                  if summaries else None),
            "peak_gpu_mb": [s.get("peak_gpu_mb") for s in summaries], "errors": errors}
    base = out["runs_1"]["train_steps_per_s"]
    for count in (2, 4):
        value = out[f"runs_{count}"]["train_steps_per_s"]
        out[f"speedup_{count}_vs_1"] = value / base if base and value else None
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-checks"))
    parser.add_argument("--dry-run-cpu", action="store_true",
                        help="run every check on the CPU at 32 px (checks this script, measures nothing useful)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    record = Record(args.out / "gpu_checks.json")
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    import torch

    torch.set_num_threads(min(8, os.cpu_count() or 1))
    record.run("environment", environment, 60)
    if args.dry_run_cpu:
        record.data["dry_run_cpu"] = True
        with tempfile.TemporaryDirectory() as tmp:
            for name, check, extra in (("trees", trees, ()), ("filter", filter_agreement, ()),
                                       ("loss", loss_agreement, ()), ("steps", steps, ()),
                                       ("packed", packed, (Path(tmp),))):
                record.run(name, check, 300, "cpu", *extra, 32)
        return 0
    if not torch.cuda.is_available():
        # The CPU-side parts: the device tree builder run on the CPU against the Kruskal trees.
        record.run("trees_cpu_only", trees, 240, "cpu", 64)
        record.data["no_gpu"] = "no CUDA GPU (torch.cuda.is_available() is False): GPU checks not run"
        record.write()
        print(f"gpu_checks: {record.data['no_gpu']}; wrote the CPU-only checks to {record.path}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        # Limits add up to under 8 minutes; a healthy H200 needs about half of that.
        record.run("trees", trees, 50, "cuda")
        record.run("filter", filter_agreement, 50, "cuda")
        record.run("loss", loss_agreement, 30, "cuda")
        record.run("pytest", gpu_pytest, 80)
        record.run("steps", steps, 80, "cuda")
        record.run("packed", packed, 180, "cuda", Path(tmp))
    record.data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    record.write()
    print(f"gpu_checks: wrote {record.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
