# Grid and paths derived from the validated config. Everything else in the workflow reads these names.
import os
import re
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod

REPO = Path(workflow.basedir)
NAME = config["name"]
RESULTS = config.get("results_dir") or f"results/{NAME}"
REPORT = f"{config['reports_dir']}/{NAME}"
TRAIN_KEYS = ("rounds", "local_steps", "batch_size", "lr", "eval_every", "val_fraction", "device",
              "faithful", "backend", "objective")

# With --use-conda the rule's environment provides `python`; otherwise use the interpreter running
# Snakemake. PYTHONPATH makes every job run this checkout's `fedicra`.
_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
PYTHON = "python" if _CONDA else sys.executable
PYENV = f'PYTHONPATH="{REPO}${{PYTHONPATH:+:$PYTHONPATH}}"'
FEDICRA = f"{PYENV} {PYTHON} -m fedicra"
REPORT_CLI = f"{PYENV} {PYTHON} -m fedicra.report"  # imports only the report package


def resolve_path(text):
    """A config path: absolute, else relative to the working directory, else to the repository."""
    path = Path(os.path.expanduser(os.path.expandvars(str(text))))
    if path.is_absolute() or path.exists():
        return path
    return REPO / path


def _needed_folders(spec):
    if spec["source"] == "import":
        return [resolve_path(spec["images"]), resolve_path(spec["masks"])]
    if spec["source"] == "folder":
        return [resolve_path(spec["path"])]
    return []


def _active_datasets():
    active = {}
    for name, spec in config["datasets"].items():
        required = {"synth": ["size"], "import": ["size", "images", "masks", "site_patterns"],
                    "folder": ["path"]}[spec["source"]]
        missing = [k for k in required if k not in spec]
        if missing:
            raise ValueError(f"config datasets.{name}: source {spec['source']} needs {', '.join(missing)}")
        absent = [str(p) for p in _needed_folders(spec) if not p.is_dir()]
        if absent and spec.get("optional", False):
            print(f"fedicra workflow: skipping optional dataset {name} ({absent[0]} not found)", file=sys.stderr)
            continue
        if absent:
            raise ValueError(f"config datasets.{name}: folder {absent[0]} does not exist")
        active[name] = spec
    if not active:
        raise ValueError("config datasets: no dataset is available (all optional ones are missing)")
    return active


DATASETS = _active_datasets()
VARIANTS = config.get("variants", {})
METHODS = list(config["methods"]) + [v for v in VARIANTS if v not in config["methods"]]
SEEDS = list(config["seeds"])


def dataset_root(name):
    spec = DATASETS[name]
    return str(resolve_path(spec["path"])) if spec["source"] == "folder" else f"{RESULTS}/data/{name}"


def dataset_assignments(name):
    return list(DATASETS[name].get("assignments") or config["assignments"])


ASSIGNMENTS = list(dict.fromkeys(a for d in DATASETS for a in dataset_assignments(d)))
RUNS = [(d, a, m, s) for d in DATASETS for a in dataset_assignments(d) for m in METHODS for s in SEEDS]


def run_dir(dataset, assignment, method, seed):
    return f"{RESULTS}/runs/{dataset}/{assignment}/{method}/seed{seed}"


def method_spec(method):
    """(base method, method_params) of a method key; a variant adds its params to the base method's."""
    if method in VARIANTS:
        base = VARIANTS[method]["method"]
        params = {**config["method_params"].get(base, {}), **VARIANTS[method].get("method_params", {})}
        return base, params
    return method, dict(config["method_params"].get(method, {}))


def run_config(wildcards):
    """The YAML document handed to `fedicra run --config` for one job."""
    base, params = method_spec(wildcards.method)
    train = {"objective": None, **config["train"], **DATASETS[wildcards.dataset].get("train", {}),
             **VARIANTS.get(wildcards.method, {}).get("train", {})}
    spec = DATASETS[wildcards.dataset]
    return {"dataset": dataset_root(wildcards.dataset), "assignment": wildcards.assignment, "method": base,
            "method_params": params, "seed": int(wildcards.seed), **{k: train[k] for k in TRAIN_KEYS},
            # upstream folders have no dataset.json: the run needs the task to infer the manifest
            **({"task": spec["task"]} if spec["source"] == "folder" else {}),
            "name": f"{wildcards.dataset}/{wildcards.assignment}/{wildcards.method}/seed{wildcards.seed}"}


def _gpu_devices():
    devices = config["gpus"]["devices"]
    return devices if isinstance(devices, str) else ",".join(str(d) for d in devices)


USES_GPU = _gpu_devices() != "none"
SLOT_ARGS = (f"--gpus {_gpu_devices()} --runs-per-gpu {config['gpus']['runs_per_gpu']}" +
             (f" --lock-dir {config['gpus']['lock_dir']}" if config["gpus"]["lock_dir"] else ""))
GPU_RESOURCES = {"gpu": 1} if USES_GPU else {}
if USES_GPU and config["resources"]["gpu_model"]:
    GPU_RESOURCES["gpu_model"] = config["resources"]["gpu_model"]


def dataset_names(source):
    return [n for n, s in DATASETS.items() if s["source"] == source]


def dataset_input(wildcards):
    """A generated dataset's manifest; nothing for an existing folder (checked at parse time)."""
    if DATASETS[wildcards.dataset]["source"] == "folder":
        return []
    return f"{RESULTS}/data/{wildcards.dataset}/dataset.json"


def report_figure(path, caption, category, **labels):
    return report(path, caption=f"../report/{caption}.rst", category=category, labels=labels)


def _alternatives(names):
    return "|".join(re.escape(n) for n in names) or "(?!x)x"


wildcard_constraints:
    dataset=_alternatives(DATASETS),
    method=_alternatives(METHODS),
    assignment=r"upstream|scribble|mask|rotate\d+|random\d+",
    seed=r"\d+",
