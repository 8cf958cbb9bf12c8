"""`fedicra train`: single-site or pooled (centralized) training, with weak labels or full masks.

It is the engine's `local` / `centralized` / `centralized_full` method run in-process, so it shares
data, model, loss, schedule, evaluation and outputs with every federated method.
"""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train one site, or the pool of all sites, without federation",
        description="Train on one site (--site K) or on the pooled sites (--site all) with the sites' "
                    "weak labels or with full masks (--labels mask, the fully supervised upper bound). "
                    "Writes per-case test metrics (cases.csv) and per-evaluation scores (rounds.csv).")
    parser.add_argument("--dataset", required=True, help="dataset root (site layout)")
    parser.add_argument("--site", default="all", help="site index (0-based) or 'all' for pooled training")
    parser.add_argument("--labels", default="weak", choices=["weak", "mask"],
                        help="weak: each site's assigned sparse labels; mask: full masks")
    parser.add_argument("--assignment", default="upstream", help="annotation assignment for weak labels")
    parser.add_argument("--steps", type=int, default=300, help="training iterations")
    parser.add_argument("--eval-every", type=int, default=50, help="validate every N iterations")
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--out", "-o", required=True, help="run directory")
    parser.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from fedicra.errors import UserError
    from fedicra.fl.config import load_config
    from fedicra.fl.runner import run_experiment

    if args.steps < 1 or args.eval_every < 1:
        raise UserError("--steps and --eval-every must be positive")
    pooled = args.site == "all"
    if not pooled and not args.site.isdigit():
        raise UserError(f"--site {args.site!r}: expected a site index or 'all'")
    method = ("centralized_full" if args.labels == "mask" else "centralized") if pooled else "local"
    local_steps = min(args.eval_every, args.steps)
    config = load_config(base={
        "dataset": args.dataset, "method": method, "sites": None if pooled else [int(args.site)],
        "assignment": "mask" if (args.labels == "mask" and not pooled) else args.assignment,
        "rounds": -(-args.steps // local_steps), "local_steps": local_steps, "batch_size": args.batch_size,
        "lr": args.lr, "seed": args.seed, "device": args.device, "threads": args.threads, "name": f"train-{args.site}-{args.labels}",
    })
    summary = run_experiment(config, Path(args.out))
    import pandas as pd

    cases = pd.read_csv(Path(args.out) / "cases.csv")
    last = cases[(cases["model"] == "personalized") & (cases["selection"] == "last")]
    table = last.groupby("site_name")[[c for c in last.columns if c.startswith(("dice_", "hd95_"))]].mean()
    print(table.round(4).to_string())
    print(json.dumps({"wall_clock_s": round(summary["wall_clock_s"], 2)}))
    return 0
