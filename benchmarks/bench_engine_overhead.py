"""Engine overhead: an in-process federated FedAvg run against a plain PyTorch loop that performs the
same optimisation steps (same model, data, batches, augmentation, AdamW re-created per round), side
by side in one process, repeats interleaved; min and median of each side and their ratios, at 64 px
batch 4 and 128 px batch 8 by default (goal: ratio at most 1.05).

    python benchmarks/bench_engine_overhead.py [--configs 64x4,128x8] [--rounds 5] [--steps 5] [--sites 5]
    python benchmarks/bench_engine_overhead.py --configs 32x2 --rounds 1 --steps 1 --sites 2 --repeats 1  # dry check

The federated time is the wall time of the round loop (messages encoded as Flower records, training,
aggregation, checkpoints at the configured cadence and rounds.csv writing); validation is disabled
and the final test is not timed.
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


def plain_loop(config, manifest, method, keys) -> float:
    """The same steps as FedAvg, without the engine: per client, per round, AdamW + poly LR + pCE."""
    import torch

    from fedicra.fl.method import weighted_average
    from fedicra.fl.setup import make_client
    from fedicra.losses import partial_cross_entropy

    clients = [make_client(config, method, k, manifest) for k in keys]
    global_state = {k: v.clone() for k, v in clients[0].model.state_dict().items()}
    started = time.perf_counter()
    for _ in range(config["rounds"]):
        states = []
        for client in clients:
            model = client.model
            model.load_state_dict(global_state)
            model.train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=client.lr(), weight_decay=config["weight_decay"])
            for _ in range(config["local_steps"]):
                for group in optimizer.param_groups:
                    group["lr"] = client.lr()
                batch = client.batch(client.step)
                loss = partial_cross_entropy(model(batch["image"])["logits"], batch["label"], manifest.num_classes)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                client.step += 1
            states.append(model.state_dict())
        global_state = weighted_average(states, [c.batches_per_epoch for c in clients])
    return time.perf_counter() - started


def compare(size: int, batch_size: int, args) -> dict:
    """Both sides on one synthetic dataset, interleaved repeat by repeat; seconds of each repeat."""
    from fedicra.data.synth import synthesize
    from fedicra.fl.config import load_config
    from fedicra.fl.registry import build_method
    from fedicra.fl.runner import run_experiment
    from fedicra.fl.setup import client_keys, load_manifest

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        synthesize("faz", root, size=size, seed=0, scale=0.5)
        config = load_config(base={
            "dataset": str(root), "method": "fedavg", "sites": list(range(args.sites)), "rounds": args.rounds,
            "local_steps": args.steps, "batch_size": batch_size, "eval_every": args.rounds + 1,
            "progress": False, "device": "cpu", "threads": args.threads})
        method = build_method(config)
        manifest = load_manifest(config)
        keys = client_keys(config, manifest, method)
        plain_loop(config, manifest, method, keys)  # warm-up (allocator, first-call costs)
        plain, federated = [], []
        for repeat in range(args.repeats):
            # Alternate who goes first so warm-up and machine noise do not favour one side.
            sides = ["plain", "federated"] if repeat % 2 == 0 else ["federated", "plain"]
            for side in sides:
                if side == "plain":
                    plain.append(plain_loop(config, manifest, method, keys))
                else:  # a fresh run directory each time (an existing one would resume)
                    summary = run_experiment(config, Path(tmp) / f"run{repeat}")
                    federated.append(summary["rounds_wall_clock_s"])
    return {"size": size, "batch_size": batch_size, "plain_s": plain, "federated_s": federated,
            "ratio_min": min(federated) / min(plain),
            "ratio_median": statistics.median(federated) / statistics.median(plain)}


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="64x4,128x8", help="comma-separated SIZExBATCH pairs")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--sites", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for pair in args.configs.split(","):
        size, batch_size = (int(v) for v in pair.lower().split("x"))
        results.append(compare(size, batch_size, args))
    steps = args.rounds * args.steps * args.sites
    print(f"federated in-process run / bare PyTorch loop: {steps} steps each, {args.threads} threads, "
          f"{args.repeats} interleaved repeats (goal <= 1.05)")
    print(f"{'size':>5} {'batch':>5} {'plain min':>10} {'plain med':>10} {'fed min':>10} {'fed med':>10}"
          f" {'ratio min':>10} {'ratio med':>10}")
    for r in results:
        print(f"{r['size']:>5} {r['batch_size']:>5} {min(r['plain_s']):>10.2f} {statistics.median(r['plain_s']):>10.2f}"
              f" {min(r['federated_s']):>10.2f} {statistics.median(r['federated_s']):>10.2f}"
              f" {r['ratio_min']:>10.3f} {r['ratio_median']:>10.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
