"""fp32 against bf16 (autocast + channels_last forward, fp32 losses): training-step time and the Dice
of a short run, side by side in one process.

    python benchmarks/bench_precision.py                               # CPU, 128 px, batch 8
    python benchmarks/bench_precision.py --size 64 --batch-size 4
    python benchmarks/bench_precision.py --device cuda --size 256 --batch-size 12
    python benchmarks/bench_precision.py --repeats 1 --rounds 1        # dry check

Step time: the engine's own local step (`Client.train_steps`: batch assembly, forward in the given
precision, the method's loss, backward, AdamW) on the same synthetic site, fp32 and bf16 clients
alternating repeat by repeat; min and median seconds per step, and the bf16 / fp32 ratio.
Dice: one in-process federated run per precision (same seed), mean test Dice of the personalized
last-round models. `--json FILE` also writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

PRECISIONS = ("fp32", "bf16")


def step_times(root: Path, args) -> dict[str, list[float]]:
    import torch

    from fedicra.fl.config import load_config
    from fedicra.fl.registry import build_method
    from fedicra.fl.setup import make_client

    clients = {}
    for precision in PRECISIONS:
        config = load_config(base={"dataset": str(root), "method": args.method, "sites": [0],
                                   "rounds": 1000, "local_steps": args.steps, "batch_size": args.batch_size,
                                   "device": args.device, "precision": precision, "progress": False})
        clients[precision] = make_client(config, build_method(config), 0)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    for client in clients.values():  # warm-up: kernels, allocator, Numba cache
        client.train_steps(client.model, 1)
    times = {p: [] for p in PRECISIONS}
    for repeat in range(args.repeats):
        order = PRECISIONS if repeat % 2 == 0 else PRECISIONS[::-1]  # alternate who goes first
        for precision in order:
            client = clients[precision]
            sync()
            began = time.perf_counter()
            client.train_steps(client.model, args.steps)
            sync()
            times[precision].append((time.perf_counter() - began) / args.steps)
    return times


def run_dice(root: Path, out: Path, precision: str, args) -> float:
    import pandas as pd

    from fedicra.fl.config import load_config
    from fedicra.fl.runner import run_experiment

    config = load_config(base={"dataset": str(root), "method": args.method, "sites": list(range(args.sites)),
                               "rounds": args.rounds, "local_steps": args.local_steps,
                               "batch_size": args.batch_size, "device": args.device, "precision": precision,
                               "progress": False, "threads": args.threads})
    run_experiment(config, out / precision)
    cases = pd.read_csv(out / precision / "cases.csv")
    last = cases[(cases["model"] == "personalized") & (cases["selection"] == "last")]
    return float(last["mean_dice"].mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--method", default="fedavg")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="local steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the Dice runs (0: skip them)")
    parser.add_argument("--local-steps", type=int, default=5)
    parser.add_argument("--sites", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    from fedicra.data.synth import synthesize

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        synthesize("faz", root, size=args.size, seed=0, scale=0.5)
        times = step_times(root, args)
        dice = {p: run_dice(root, Path(tmp) / "runs", p, args) for p in PRECISIONS} if args.rounds else {}
    result = {"device": args.device, "method": args.method, "size": args.size, "batch_size": args.batch_size,
              "repeats": args.repeats, "threads": args.threads,
              **{f"{p}_step_s_{stat.__name__}": stat(times[p]) for p in PRECISIONS for stat in (min, statistics.median)},
              **{f"{p}_dice": dice[p] for p in dice}}
    result["ratio_min"] = result["bf16_step_s_min"] / result["fp32_step_s_min"]
    result["ratio_median"] = result["bf16_step_s_median"] / result["fp32_step_s_median"]
    print(f"{args.method} on {args.device}, {args.size}px batch {args.batch_size}, {args.threads} threads, "
          f"{args.repeats} interleaved repeats x {args.steps} steps")
    print(f"{'':14}{'fp32':>10}{'bf16':>10}{'bf16/fp32':>11}")
    for stat in ("min", "median"):
        a, b = result[f"fp32_step_s_{stat}"], result[f"bf16_step_s_{stat}"]
        print(f"{'step s ' + stat:14}{a:10.4f}{b:10.4f}{b / a:11.3f}")
    if dice:
        print(f"{'Dice':14}{dice['fp32']:10.4f}{dice['bf16']:10.4f}   ({args.rounds} rounds x {args.local_steps} steps, "
              f"{args.sites} sites)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
