"""Where a deployment round's time goes on the node, for the part that is ours.

In Flower 1.42 every message to a SuperNode starts a fresh `flwr-clientapp` process. This script
reproduces what that process does with fedicra's ClientApp, in a fresh interpreter per message, and
times each phase: interpreter + imports, client build (model, site data), state restore from the
node's disk, the protocol step (training), state save. What is left of a measured round after these
is Flower's: process start-up by the SuperExec, FAB install, message/context transfer and the
SuperNode's polling (about 3 s when idle).

    python benchmarks/bench_clientapp_cold.py --dataset DIR [--rounds 2] [--local-steps 5] [--repeats 1]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r'''
import json, sys, time
t0 = time.perf_counter()
import torch
from flwr.app import ConfigRecord, RecordDict
from fedicra.fl import protocol
from fedicra.fl.backends.node_state import NodeState
from fedicra.fl.registry import build_method
from fedicra.fl.server import initial_state
from fedicra.fl.setup import load_manifest, make_client
from fedicra.seeding import apply_threads
t1 = time.perf_counter()
config, round_, state_dir = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
apply_threads(config)
method = build_method(config)
manifest = load_manifest(config)
client = make_client(config, method, config["sites"][0], manifest)
t2 = time.perf_counter()
store = NodeState.for_node(config, {"state-dir": state_dir}, config["sites"][0])
loaded = store.load(round_ - 1)
if loaded is not None:
    client.restore(loaded[1])
t3 = time.perf_counter()
arrays = initial_state(config, method, manifest)
settings = {"round": round_, "local_steps": config["local_steps"], "evaluate": round_ > 1, "final": False}
request = protocol.request_from_record(protocol.to_record(arrays), settings)
protocol.handle(client, request)
t4 = time.perf_counter()
store.save(round_, client.snapshot(), round_ - 1)
t5 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "build_client": t2 - t1, "restore": t3 - t2, "train_step": t4 - t3,
                  "save": t5 - t4}))
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--method", default="fedbn")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--local-steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    from fedicra.fl.config import load_config

    config = load_config(base={"dataset": str(Path(args.dataset).resolve()), "method": args.method,
                               "sites": [0, 1], "rounds": args.rounds, "local_steps": args.local_steps,
                               "progress": False, "threads": 1})
    rows = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as state_dir:
            for round_ in range(1, args.rounds + 1):
                began = time.perf_counter()
                out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(config), str(round_), state_dir],
                                     capture_output=True, text=True, check=True).stdout
                phases = json.loads(out.strip().splitlines()[-1])
                phases["process_total"] = time.perf_counter() - began
                phases["round"] = round_
                rows.append(phases)
    keys = ["imports", "build_client", "restore", "train_step", "save", "process_total"]
    print("round " + " ".join(f"{k:>13}" for k in keys))
    for row in rows:
        print(f"{row['round']:>5} " + " ".join(f"{row[k]:>12.2f}s" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
