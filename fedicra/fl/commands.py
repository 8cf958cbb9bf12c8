"""`fedicra run` and `fedicra methods`."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    run = subparsers.add_parser("run", help="run one federated experiment (resumes if interrupted)",
                                description="Run one experiment from a YAML config plus overrides. "
                                            "Re-running the same command resumes from the last checkpoint.")
    run.add_argument("--config", "-c", help="YAML run configuration (see config/run-example.yaml)")
    run.add_argument("--out", "-o", required=True, help="run directory")
    run.add_argument("--set", "-s", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set method=fedbn --set method_params.mu=0.01")
    run.set_defaults(func=_run)

    methods = subparsers.add_parser("methods", help="list the available methods and their hyper-parameters")
    methods.set_defaults(func=_methods)


def _run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from fedicra.fl.config import load_config
    from fedicra.fl.runner import run_experiment

    config = load_config(args.config, args.overrides)
    summary = run_experiment(config, Path(args.out))
    print(json.dumps({k: summary[k] for k in ("wall_clock_s", "peak_rss_mb", "bytes_per_round")}))
    return 0


def _methods(args: argparse.Namespace) -> int:
    from fedicra.fl.registry import load_methods

    from fedicra.fl.hyperparameters import as_param

    for name, cls in sorted(load_methods().items()):
        personal = [*cls.personal, *(f"every {t.__name__}" for t in cls.personal_types)]
        print(f"{name}: {cls.description}")
        print(f"    model={cls.model}  objective={cls.objective}  personal=[{', '.join(personal) or '-'}]")
        for key, spec in cls.hyperparameters.items():
            print(f"    {key}: {as_param(spec).describe()}")
    return 0
