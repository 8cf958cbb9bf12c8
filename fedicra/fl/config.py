"""Run configuration: a YAML file plus `key=value` overrides, validated against a JSON schema."""
from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import yaml

from fedicra.data.assignment import ASSIGNMENT_PATTERN
from fedicra.errors import UserError

NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]*$"   # names that become folder names or wildcards

# Defaults are part of the schema so that `config.json` of a run states every value that was used.
RUN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["dataset", "method"],
    "properties": {
        "dataset": {"type": "string", "description": "dataset root (site layout with dataset.json)"},
        "task": {"type": ["string", "null"], "enum": ["faz", "odoc", None], "default": None,
                 "description": "only needed for upstream folders without dataset.json"},
        "assignment": {"type": "string", "pattern": ASSIGNMENT_PATTERN, "default": "upstream",
                       "description": "upstream | mask | <label kind> | rotate<k> | random<s>"},
        "sites": {"type": ["array", "null"], "items": {"type": "integer", "minimum": 0}, "uniqueItems": True,
                  "minItems": 1, "default": None, "description": "subset of site indices; null = all"},
        "method": {"type": "string"},
        "holdout_site": {"type": ["integer", "null"], "minimum": 0, "default": None,
                         "description": "leave-one-site-out: train on the other sites, then score this site's "
                                        "test set as a new site (unseen_* rows of cases.csv); null = off"},
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
        "device": {"type": "string", "pattern": "^(auto|cpu|cuda(:[0-9]+)?)$", "default": "auto",
                   "description": "auto (cuda when available) | cpu | cuda | cuda:<k>"},
        "precision": {"type": "string", "enum": ["auto", "fp32", "bf16"], "default": "auto",
                      "description": "training forward: bf16 = autocast + channels_last (losses stay fp32); "
                                     "auto = bf16 on CUDA, fp32 otherwise; the run records the resolved value"},
        "backend": {"type": "string", "enum": ["inprocess", "simulation", "deployment"], "default": "inprocess"},
        "checkpoint_every": {"anyOf": [{"type": "integer", "minimum": 1}, {"const": "auto"}], "default": "auto",
                             "description": "rounds between checkpoints (and the last round), or auto: "
                                            "time-based, under 2% of the run, none in a run under a minute "
                                            "(see fedicra.fl.cadence)"},
        "allow_failures": {"type": "boolean", "default": False,
                           "description": "drop a failing site for the round instead of stopping the run"},
        "client_timeout": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": None,
                           "description": "seconds a site may take for one round before it counts as failed"},
        "threads": {"type": ["integer", "null"], "minimum": 1, "default": None,
                    "description": "CPU threads for torch (null: torch's default); set 1 when jobs share cores"},
        "simulation": {"type": "object", "additionalProperties": False,
                       "properties": {"num_cpus_per_client": {"type": "number", "exclusiveMinimum": 0},
                                      "num_gpus_per_client": {"type": "number", "minimum": 0}},
                       "default": {"num_cpus_per_client": 1, "num_gpus_per_client": 0.0},
                       "description": "Ray resources per client (simulation backend)"},
        "node_samples_dir": {"type": ["string", "null"], "default": None,
                             "description": "Flower backends: folder on each node where its site writes its "
                                            "qualitative sample (null: none); in-process runs write into the run directory"},
        "resume_moved": {"type": "boolean", "default": False,
                         "description": "resume a checkpoint written in another folder (a copied or moved run "
                                        "directory); false: refuse it in one line"},
        "progress": {"type": "boolean", "default": True},
        "name": {"type": ["string", "null"], "default": None},
    },
}


# Keys the workflow sets per job from its grid (datasets x assignments x methods x seeds, and the held-out
# site of a leave-one-site-out run); every other
# run option is a `train:` option of a workflow config.
GRID_KEYS = ("dataset", "task", "assignment", "method", "method_params", "seed", "holdout_site", "name")


def _defaults() -> dict[str, Any]:
    return {k: copy.deepcopy(v["default"]) for k, v in RUN_SCHEMA["properties"].items() if "default" in v}


# ------------------------------------------------------------------ YAML
# YAML 1.1 (PyYAML) reads `1e-3` as a string; YAML 1.2 and every user read it as a number.
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                      |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                      |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                      |[-+]?\.(?:inf|Inf|INF)
                      |\.(?:nan|NaN|NAN))$""", re.X)


class ConfigLoader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 floats (`1e-3`) and duplicate keys refused (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


ConfigLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first in "-+0123456789.":
    ConfigLoader.yaml_implicit_resolvers[_first] = [
        (tag, regexp) for tag, regexp in ConfigLoader.yaml_implicit_resolvers.get(_first, [])
        if tag != "tag:yaml.org,2002:float"]
ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML text; a syntax error or a duplicate key is a UserError naming `source` and the line."""
    try:
        return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 (ConfigLoader is a SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UserError(f"{source}: not valid YAML{where} ({problem})") from None


def numbers_as_yaml12(value: Any) -> Any:
    """Strings a YAML 1.1 reader left unparsed (`"1e-3"`) as the numbers YAML 1.2 reads; for configs
    that another loader (Snakemake's) has already parsed."""
    if isinstance(value, dict):
        return {k: numbers_as_yaml12(v) for k, v in value.items()}
    if isinstance(value, list):
        return [numbers_as_yaml12(v) for v in value]
    if isinstance(value, str) and _FLOAT.match(value):
        return yaml.load(value, Loader=ConfigLoader)  # noqa: S506
    return value


def _non_finite(value: Any, where: str) -> str | None:
    """The dotted key of the first NaN or infinity in a config, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def check_options(options: dict[str, Any], schema: dict[str, Any], source: str) -> None:
    """Validate against a JSON schema; the first problem becomes one line naming the key."""
    import jsonschema

    bad = _non_finite(options, "")
    if bad:
        raise UserError(f"{source}option {bad}: must be a finite number")
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(options))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "config"
        raise UserError(f"{source}option {where}: {error.message}")


def train_schema() -> dict[str, Any]:
    """The run schema without the grid keys: what a workflow config's `train:` block may hold."""
    schema = copy.deepcopy(RUN_SCHEMA)
    schema.pop("required", None)
    for key in GRID_KEYS:
        schema["properties"].pop(key)
    return schema


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], value parsed as YAML, so numbers, booleans and lists work)."""
    if "=" not in text:
        raise UserError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise UserError(f"--set {text!r}: empty key")
    try:
        value = yaml.load(raw, Loader=ConfigLoader) if raw != "" else ""  # noqa: S506
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def load_config(path: str | Path | None = None, overrides: list[str] = (), base: dict | None = None) -> dict[str, Any]:
    """Merge defaults <- YAML file <- base dict <- overrides, then validate. Returns a plain dict."""
    config = _defaults()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: config file not found")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"{path}: cannot read ({err})") from None
        loaded = load_yaml(text, str(path)) or {}
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
    check_options(config, RUN_SCHEMA, f"{path}: " if path else "")
    return config
