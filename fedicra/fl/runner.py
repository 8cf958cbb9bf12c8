"""Run one experiment (one configuration) on the configured backend."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fedicra.fl.registry import build_method
from fedicra.fl.server import Federation
from fedicra.fl.setup import client_keys, load_manifest, make_client
from fedicra.seeding import apply_threads, seed_everything


def run_experiment(config: dict[str, Any], run_dir: str | Path, transport=None) -> dict[str, Any]:
    """Run (or resume) the experiment; returns the summary written to `run_dir/summary.json`."""
    apply_threads(config)
    seed_everything(config["seed"])
    method = build_method(config)
    manifest = load_manifest(config)
    if config["backend"] != "inprocess" and transport is None:
        from importlib import import_module

        # Flower backends run the same Federation loop inside a ServerApp (see fedicra.fl.flower_app).
        return import_module(f"fedicra.fl.backends.{config['backend']}").run(config, Path(run_dir))
    keys = client_keys(config, manifest, method)
    if transport is None:
        from fedicra.fl.backends.inprocess import InProcessTransport

        clients = {key: make_client(config, method, key, manifest) for key in keys}
        for client in clients.values():   # in-process, a site's own folder is the run directory
            client.samples_dir = Path(run_dir)
        transport = InProcessTransport(clients, timeout=config["client_timeout"])
    return Federation(config, method, manifest, keys, transport, Path(run_dir)).run()
