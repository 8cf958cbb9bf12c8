"""Checks of a workflow config that its JSON schema (workflow/schemas/config.schema.yaml) leaves to
the engine, so that the engine's own definitions are the only ones: every `train:` block (global and
per dataset) against the run schema, and every method key against the method registry and the
method's hyper-parameters. Run at parse time, so a dry run already fails, in one line naming the key.
"""
from __future__ import annotations

import sys
from typing import Any

from fedicra.errors import UserError


def workflow_errors(config: dict[str, Any], trains: dict[str, dict[str, Any]],
                    methods: dict[str, tuple[str, dict[str, Any]]]) -> None:
    """Raise UserError for the first problem. `trains`: dataset -> its merged train options;
    `methods`: method key -> (base method, method_params) as the workflow resolves them."""
    import re

    from fedicra.data.assignment import ASSIGNMENT_PATTERN, NAMES_HELP
    from fedicra.fl.config import check_options, train_schema
    from fedicra.fl.registry import get_method

    named = [("assignments", a) for a in config.get("assignments") or []]
    named += [(f"datasets.{n}.assignments", a) for n, d in config["datasets"].items() for a in d.get("assignments") or []]
    named += [("report.primary_assignment", a) for a in [(config.get("report") or {}).get("primary_assignment")] if a]
    for where, name in named:
        if not re.match(ASSIGNMENT_PATTERN, str(name)):
            raise UserError(f"config {where}: {name!r} is not an annotation assignment (expected {NAMES_HELP})")
    schema = train_schema()
    check_options(config.get("train") or {}, schema, "config train: ")
    for name, train in trains.items():
        check_options(train, schema, f"config datasets.{name}.train: ")
    for name, variant in (config.get("variants") or {}).items():
        check_options(variant.get("train") or {}, schema, f"config variants.{name}.train: ")
    for key, (base, params) in methods.items():
        where = f"variants.{key}" if key in (config.get("variants") or {}) else f"methods: {key}"
        try:
            get_method(base)(params, faithful=bool(config.get("train", {}).get("faithful", False)))
        except UserError as err:
            raise UserError(f"config {where}: {err}") from None
    for base in config.get("method_params") or {}:
        try:
            get_method(base)
        except UserError as err:
            raise UserError(f"config method_params.{base}: {err}") from None


def check_workflow_config(config: dict[str, Any], trains: dict[str, dict[str, Any]],
                          methods: dict[str, tuple[str, dict[str, Any]]]) -> None:
    """`workflow_errors` for the Snakefile: the problem as one line on stderr and exit status 2."""
    try:
        workflow_errors(config, trains, methods)
    except UserError as err:
        exit_with_error(str(err))


def exit_with_error(message: str) -> None:
    """A workflow config problem, at parse time: one line on stderr, exit status 2 (no traceback)."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)


def exit_with_schema_error(err: BaseException) -> None:
    """Turn Snakemake's multi-line schema error into one line naming the key, and exit 2."""
    import jsonschema

    found = [a for a in (*getattr(err, "args", ()), err.__cause__, err.__context__)
             if isinstance(a, jsonschema.ValidationError)]
    if not found:
        raise err
    error = jsonschema.exceptions.best_match([found[0]]) or found[0]
    where = ".".join(str(p) for p in error.absolute_path) or "config"
    exit_with_error(f"config {where}: {error.message}")
