"""Run configuration: a YAML file plus `key=value` overrides, validated against a JSON schema."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from fedicra.errors import UserError

# Defaults are part of the schema so that `config.json` of a run states every value that was used.
RUN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["dataset", "method"],
    "properties": {
        "dataset": {"type": "string", "description": "dataset root (site layout with dataset.json)"},
        "task": {"type": ["string", "null"], "enum": ["faz", "odoc", None], "default": None,
                 "description": "only needed for upstream folders without dataset.json"},
        "assignment": {"type": "string", "default": "upstream",
                       "description": "upstream | scribble | mask | rotate<k> | random<s>"},
        "sites": {"type": ["array", "null"], "items": {"type": "integer", "minimum": 0}, "default": None,
                  "description": "subset of site indices; null = all"},
        "method": {"type": "string"},
        "method_params": {"type": "object", "default": {}},
        "seed": {"type": "integer", "minimum": 0, "default": 0},
        "rounds": {"type": "integer", "minimum": 1, "default": 10},
        "local_steps": {"type": "integer", "minimum": 1, "default": 10},
        "batch_size": {"type": "integer", "minimum": 1, "default": 12},
        "lr": {"type": "number", "exclusiveMinimum": 0, "default": 0.01},
        "lr_power": {"type": "number", "minimum": 0, "default": 0.9},
        "weight_decay": {"type": "number", "minimum": 0, "default": 0.01},
        "gated_crf": {"type": "number", "minimum": 0, "default": 0.0,
                      "description": "weight of the gated CRF term in the shared objective (upstream v4: 0.1)"},
        "objective": {"type": ["string", "null"], "enum": ["pce", "pce+gcrf", "pce+gcrf+mtel", None], "default": None,
                      "description": "weak-supervision objective for every method; null = the method's own "
                                     "(FedICRA pce+gcrf+mtel, the others pce)"},
        "augment": {"type": "boolean", "default": True},
        "eval_every": {"type": "integer", "minimum": 1, "default": 1},
        "val_fraction": {"type": "number", "minimum": 0, "maximum": 0.9, "default": 0.2},
        "select_on_test": {"type": "boolean", "default": False,
                           "description": "also report upstream's best-on-test selection (optimistic)"},
        "aggregation_weight": {"type": "string", "enum": ["batches", "cases"], "default": "batches"},
        "metric_policy": {"type": "string", "enum": ["intended", "upstream"], "default": "intended"},
        "faithful": {"type": "boolean", "default": False,
                     "description": "reproduce upstream quirks instead of the intended behaviour"},
        "device": {"type": "string", "default": "auto"},
        "backend": {"type": "string", "enum": ["inprocess", "simulation", "deployment"], "default": "inprocess"},
        "checkpoint_every": {"type": "integer", "minimum": 1, "default": 1},
        "allow_failures": {"type": "boolean", "default": False,
                           "description": "drop a failing site for the round instead of stopping the run"},
        "client_timeout": {"type": ["number", "null"], "default": None,
                           "description": "seconds a site may take for one round before it counts as failed"},
        "threads": {"type": ["integer", "null"], "minimum": 1, "default": None,
                    "description": "CPU threads for torch (null: torch's default); set 1 when jobs share cores"},
        "simulation": {"type": "object", "default": {"num_cpus_per_client": 1, "num_gpus_per_client": 0.0}},
        "progress": {"type": "boolean", "default": True},
        "name": {"type": ["string", "null"], "default": None},
    },
}


def _defaults() -> dict[str, Any]:
    return {k: copy.deepcopy(v["default"]) for k, v in RUN_SCHEMA["properties"].items() if "default" in v}


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], value parsed as YAML, so numbers, booleans and lists work)."""
    if "=" not in text:
        raise UserError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise UserError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def load_config(path: str | Path | None = None, overrides: list[str] = (), base: dict | None = None) -> dict[str, Any]:
    """Merge defaults <- YAML file <- base dict <- overrides, then validate. Returns a plain dict."""
    import jsonschema

    config = _defaults()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise UserError(f"{path}: expected a mapping at the top level")
        config.update(loaded)
    config.update(base or {})
    for item in overrides:
        keys, value = parse_override(item)
        target = config
        for key in keys[:-1]:
            target = target.setdefault(key, {})
            if not isinstance(target, dict):
                raise UserError(f"--set {item!r}: {key} is not a mapping")
        target[keys[-1]] = value
    try:
        jsonschema.validate(config, RUN_SCHEMA)
    except jsonschema.ValidationError as err:
        where = ".".join(str(p) for p in err.absolute_path) or "config"
        source = f"{path}: " if path else ""
        raise UserError(f"{source}option {where}: {err.message}") from None
    return config


def dump_config(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2, sort_keys=True)
