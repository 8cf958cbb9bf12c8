"""Flower simulation backend: the fedicra ServerApp and ClientApp on Flower's Ray runtime.

One virtual SuperNode per client key (node i serves the i-th key). The ServerApp runs in this
process, bound to the configuration and run directory; each request carries the configuration, so
the ClientApps (in Ray actors) need nothing else.

Ray is asked to stay on the loopback interface (`_node_ip_address=127.0.0.1`, no dashboard), but
Ray 2.55 cannot be kept there: its GCS, raylet, workers and driver still listen on every interface
(`::`) and its runtime-env agent on the machine's address (checked by
`tests/test_flower_backends.py::test_simulation_backend_ray_listeners`). Ray has no authentication,
so `run` warns at start; use the simulation backend only on a trusted machine or behind a firewall.
Ray's agents outlive a SIGKILLed driver; `fedicra.fl.backends.reaper` kills them (tested with SIGKILL).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from fedicra import record


def backend_config(config: dict[str, Any]) -> dict[str, Any]:
    resources = config.get("simulation") or {}
    return {
        "client_resources": {"num_cpus": float(resources.get("num_cpus_per_client", 1)),
                             "num_gpus": float(resources.get("num_gpus_per_client", 0.0))},
        # Ray binds the machine's external address and starts a dashboard unless told otherwise.
        "init_args": {"_node_ip_address": "127.0.0.1", "include_dashboard": False},
    }


RAY_EXPOSURE_WARNING = (
    "warning: backend simulation: Ray {version} listens beyond 127.0.0.1 although told to stay there "
    "(GCS, raylet and workers on every interface, its runtime-env agent on this machine's address) and has "
    "no authentication; run it only on a trusted machine or behind a firewall (docs/deployment.md)")


def ray_exposure_warning() -> str:
    import ray

    return RAY_EXPOSURE_WARNING.format(version=ray.__version__)


def ray_listeners() -> list[str]:
    """`address:port (process)` of every listening TCP socket of this process and its Ray children."""
    import psutil

    me = psutil.Process()
    found = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            sockets = proc.net_connections(kind="inet")
            name = proc.name()
        except psutil.Error:
            continue
        found += [f"{c.laddr.ip}:{c.laddr.port} ({name})" for c in sockets if c.status == psutil.CONN_LISTEN]
    return found


def run(experiment, run_dir: Path) -> dict[str, Any]:
    """One virtual SuperNode per client key; the ServerApp (in this process) runs `experiment`."""
    import json

    from flwr.simulation import run_simulation

    from fedicra.fl.backends.reaper import orphan_reaper
    from fedicra.fl.flower_app import client_app, make_server_app

    run_dir = Path(run_dir)
    print(ray_exposure_warning(), file=sys.stderr, flush=True)
    with orphan_reaper():   # Ray's agents outlive a SIGKILLed launcher otherwise
        run_simulation(server_app=make_server_app(experiment.config, run_dir, experiment), client_app=client_app,
                       num_supernodes=len(experiment.keys), backend_config=backend_config(experiment.config))
    summary_path = run_dir / record.SUMMARY
    if not summary_path.is_file():  # run_simulation re-raises ServerApp errors; this is a safety net
        raise RuntimeError(f"{run_dir}: the Flower simulation ended without writing summary.json")
    return json.loads(summary_path.read_text())
