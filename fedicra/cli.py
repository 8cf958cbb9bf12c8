"""`fedicra` command line: each command group lives in its own module and registers itself here.

Modules are imported lazily by `register(subparsers)` functions that only build parsers; heavy
imports (torch, flwr) happen inside the command functions so `fedicra --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from fedicra.errors import run_cli

# (module, one-line help) for every command group; each module defines `register(subparsers)`.
COMMAND_MODULES = (
    "fedicra.data.commands",
    "fedicra.train_commands",
    "fedicra.fl.commands",
    "fedicra.report.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedicra",
        description="Personalized federated learning benchmark for weakly-supervised segmentation.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_cli(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
