"""Run one experiment (one configuration) on the configured backend."""
from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Any

from fedicra.fl.client import resolve_device, resolve_precision
from fedicra.fl.server import completed_summary
from fedicra.fl.setup import assemble


def run_experiment(config: dict[str, Any], run_dir: str | Path, transport=None) -> dict[str, Any]:
    """Run (or resume) the experiment; returns the summary written to `run_dir/summary.json`.

    A finished run of the same configuration is not run again (its summary is returned)."""
    # Resolved first, so config.json and summary.json state the precision that was used.
    config = {**config, "precision": resolve_precision(config.get("precision", "auto"), resolve_device(config["device"]))}
    done = completed_summary(config, Path(run_dir))
    if done is not None:   # checked before a Flower backend starts any process
        print(f"{run_dir}: this run is already complete (summary.json); nothing to do", flush=True)
        return done
    experiment = assemble(config)
    if transport is not None:
        return experiment.federation(transport, run_dir).run()
    # Each backend supplies only a transport for this experiment; the Flower ones do it inside a
    # ServerApp (see fedicra.fl.flower_app), after starting one node per client key.
    return import_module(f"fedicra.fl.backends.{config['backend']}").run(experiment, Path(run_dir))
