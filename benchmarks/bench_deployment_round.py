"""Seconds per round of a real Flower deployment on 127.0.0.1 (SuperLink + one SuperNode per site)
against the same run in-process, side by side in one process, repeats interleaved.

Per round: the server row's `seconds` in rounds.csv (send, train on every node, replies back,
aggregate), round 1 left out (it also starts the nodes' first ClientApp processes). The difference
between the two backends is what a deployment pays per round for messaging and Flower's process per
message; `benchmarks/bench_clientapp_cold.py` splits the part of it that is ours.

    python benchmarks/bench_deployment_round.py [--rounds 4] [--sites 2] [--steps 5] [--size 64] [--repeats 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")


def seconds_per_round(run_dir: Path) -> list[float]:
    from fedicra import record

    rounds = record.read_rounds(run_dir)
    server = rounds[(rounds["site"] == -1) & (rounds["round"] > 1)]
    return [float(s) for s in server["seconds"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--sites", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from fedicra.data.synth import synthesize
    from fedicra.fl.config import load_config
    from fedicra.fl.runner import run_experiment

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        synthesize("faz", root, size=args.size, seed=0, scale=0.5)
        base = {"dataset": str(root), "method": "fedavg", "sites": list(range(args.sites)), "rounds": args.rounds,
                "local_steps": args.steps, "batch_size": 4, "eval_every": 1, "progress": False, "device": "cpu",
                "threads": 1}
        seconds: dict[str, list[float]] = {"inprocess": [], "deployment": []}
        for repeat in range(args.repeats):
            order = ["inprocess", "deployment"] if repeat % 2 == 0 else ["deployment", "inprocess"]
            for backend in order:
                run_dir = Path(tmp) / f"{backend}{repeat}"
                run_experiment(load_config(base={**base, "backend": backend}), run_dir)
                seconds[backend].extend(seconds_per_round(run_dir))
    print(f"seconds per round (rounds 2-{args.rounds}, {args.sites} sites, {args.steps} local steps, "
          f"{args.size} px, {args.repeats} interleaved repeats)")
    for backend, values in seconds.items():
        print(f"{backend:>10}: min {min(values):6.2f}  median {statistics.median(values):6.2f}  n={len(values)}")
    print(f"deployment - inprocess (median): "
          f"{statistics.median(seconds['deployment']) - statistics.median(seconds['inprocess']):.2f} s per round")


if __name__ == "__main__":
    main()
