"""Engine overhead: an in-process federated FedAvg run against a plain PyTorch loop that performs the
same optimisation steps (same model, data, batches, augmentation, AdamW re-created per round) in the
same process. Prints both times and their ratio (goal: at most 1.10 on CPU at 128 px).

    python benchmarks/bench_engine_overhead.py [--size 128] [--rounds 5] [--steps 5] [--sites 5]

The federated time is the wall time of the round loop (messages encoded as Flower records, training,
aggregation, checkpoint and rounds.csv writing); validation is disabled and the final test is not timed.
"""
from __future__ import annotations

import argparse
import os
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


def main() -> None:
    import torch

    from fedicra.data.synth import synthesize
    from fedicra.fl.config import load_config
    from fedicra.fl.registry import build_method
    from fedicra.fl.runner import run_experiment
    from fedicra.fl.setup import client_keys, load_manifest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--sites", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        synthesize("faz", root, size=args.size, seed=0, scale=0.5)
        config = load_config(base={
            "dataset": str(root), "method": "fedavg", "sites": list(range(args.sites)), "rounds": args.rounds,
            "local_steps": args.steps, "batch_size": args.batch_size, "eval_every": args.rounds + 1,
            "progress": False, "device": "cpu"})
        method = build_method(config)
        manifest = load_manifest(config)
        keys = client_keys(config, manifest, method)
        # Alternate the order so warm-up and machine noise do not favour one side.
        plain_first = plain_loop(config, manifest, method, keys)
        federated = run_experiment(config, Path(tmp) / "run")["rounds_wall_clock_s"]
        plain_second = plain_loop(config, manifest, method, keys)
    plain = min(plain_first, plain_second)
    steps = args.rounds * args.steps * args.sites
    print(f"{steps} steps at {args.size}px batch {args.batch_size}, {args.threads} threads")
    print(f"plain PyTorch loop : {plain:8.2f} s  (runs: {plain_first:.2f}, {plain_second:.2f})")
    print(f"federated engine   : {federated:8.2f} s")
    print(f"ratio              : {federated / plain:8.3f}")


if __name__ == "__main__":
    main()
