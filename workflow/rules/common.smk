# Grid and paths derived from the validated config. Everything else in the workflow reads these names.
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod

REPO = Path(workflow.basedir)
if str(REPO) not in sys.path:  # parse-time helpers import this checkout's fedicra, as jobs do via PYTHONPATH
    sys.path.insert(0, str(REPO))
from fedicra.data.assignment import ASSIGNMENT_REGEX  # noqa: E402
from fedicra.workflow_config import check_workflow_config, exit_with_error  # noqa: E402

NAME = config["name"]
RESULTS = config.get("results_dir") or f"results/{NAME}"
REPORT = f"{config['reports_dir']}/{NAME}"

# With --use-conda the rule's environment provides `python`; otherwise use the interpreter running
# Snakemake. PYTHONPATH makes every job run this checkout's `fedicra`. These are shell text, so every
# path in them is quoted; every config value reaches a shell through a `:q` field (no value is a command).
_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
PYTHON = "python" if _CONDA else shlex.quote(sys.executable)
PYENV = f"PYTHONPATH={shlex.quote(str(REPO))}${{PYTHONPATH:+:$PYTHONPATH}}"
FEDICRA = f"{PYENV} {PYTHON} -m fedicra"
REPORT_CLI = f"{PYENV} {PYTHON} -m fedicra.report"  # imports only the report package


def resolve_path(text):
    """A config path: absolute, else relative to the working directory, else to the repository."""
    path = Path(os.path.expanduser(os.path.expandvars(str(text))))
    if path.is_absolute() or path.exists():
        return path
    return REPO / path


def import_folders(spec):
    """(images, masks) of an import dataset: the configured folders when both exist, else the copy
    shipped in the package (`builtin`), else the configured ones (reported missing)."""
    configured = [resolve_path(spec[k]) for k in ("images", "masks") if k in spec]
    if spec.get("builtin") and not (len(configured) == 2 and all(p.is_dir() for p in configured)):
        from fedicra.data.builtin import builtin_folders
        return list(builtin_folders(spec["builtin"]))
    return configured


def _needed_folders(spec):
    if spec["source"] == "import":
        return import_folders(spec)
    if spec["source"] == "folder":
        return [resolve_path(spec["path"])]
    return []


def _active_datasets():
    active = {}
    for name, spec in config["datasets"].items():
        folders = [] if spec.get("builtin") else ["images", "masks"]
        required = {"synth": ["size"], "import": ["size", "site_patterns", *folders],
                    "folder": ["path"]}[spec["source"]]
        missing = [k for k in required if k not in spec]
        if missing:
            exit_with_error(f"config datasets.{name}: source {spec['source']} needs {', '.join(missing)}")
        absent = [str(p) for p in _needed_folders(spec) if not p.is_dir()]
        if absent and spec.get("optional", False):
            print(f"fedicra workflow: skipping optional dataset {name} ({absent[0]} not found)", file=sys.stderr)
            continue
        if absent:
            exit_with_error(f"config datasets.{name}: folder {absent[0]} does not exist")
        active[name] = spec
    if not active:
        exit_with_error("config datasets: no dataset is available (all optional ones are missing)")
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


def dataset_site_count(name):
    """How many sites a dataset has, known before its data exist (synthetic presets, import patterns)."""
    spec = DATASETS[name]
    if spec["source"] == "synth":
        from fedicra.data.synth import PHANTOMS
        return len(PHANTOMS[spec["task"]][1])
    if spec["source"] == "import":
        return len(dict.fromkeys(p.split("=", 1)[1] for p in spec["site_patterns"]))
    from fedicra.data.manifest import Manifest
    return len(Manifest.load(resolve_path(spec["path"]), task=spec["task"]).sites)


def dataset_holdouts(name):
    """The held-out sites of a dataset's leave-one-site-out runs ([] when off)."""
    choice = DATASETS[name].get("leave_one_site_out", config["leave_one_site_out"])
    if choice is False:
        return []
    count = dataset_site_count(name)
    if count < 2:
        exit_with_error(f"config leave_one_site_out: {name} has {count} site; holding it out leaves none to train")
    sites = list(range(count)) if choice is True else list(choice)
    if any(s >= count for s in sites):
        exit_with_error(f"config leave_one_site_out: site {max(sites)} does not exist ({name} has {count} sites)")
    return sites


def dataset_train(name):
    """The run options of a dataset's runs: the global `train:` block with the dataset's overrides.
    Options not set here take the run schema's defaults (fedicra.fl.config.RUN_SCHEMA), the only ones."""
    return {**config["train"], **DATASETS[name].get("train", {})}


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
    spec = DATASETS[wildcards.dataset]
    holdout = getattr(wildcards, "holdout", None)   # set by the leave-one-site-out rules
    return {"dataset": dataset_root(wildcards.dataset), "assignment": wildcards.assignment, "method": base,
            "method_params": params, "seed": int(wildcards.seed), **dataset_train(wildcards.dataset),
            **VARIANTS.get(wildcards.method, {}).get("train", {}),
            # upstream folders have no dataset.json: the run needs the task to infer the manifest
            **({"task": spec["task"]} if spec["source"] == "folder" else {}),
            **({"holdout_site": int(holdout)} if holdout is not None else {}),
            "name": f"{wildcards.dataset}/{wildcards.assignment}/{wildcards.method}/"
                    + (f"holdout{holdout}/" if holdout is not None else "") + f"seed{wildcards.seed}"}


def serves_new_site(method):
    from fedicra.fl.registry import get_method
    return get_method(method_spec(method)[0]).new_site


# Leave-one-site-out runs: (dataset, assignment, method, held-out site, seed), for methods that give a
# site that never trained a model (fedicra.fl.holdout); their run directory adds holdout<k>/.
HOLDOUT_RUNS = [(d, a, m, h, s) for d in DATASETS for a in dataset_assignments(d) for m in METHODS
                if serves_new_site(m) for h in dataset_holdouts(d) for s in SEEDS]


def holdout_run_dir(dataset, assignment, method, holdout, seed):
    return f"{RESULTS}/runs/{dataset}/{assignment}/{method}/holdout{holdout}/seed{seed}"


# What JSON schema cannot say: run options against the run schema, methods and their parameters
# against the registry. A bad value fails the (dry) run here, in one line naming the key.
check_workflow_config(config, {name: dataset_train(name) for name in DATASETS}, {m: method_spec(m) for m in METHODS})


def _gpu_plan():
    """(--gpus value for the slot allocator, GPU slots visible on this machine).

    `auto` is resolved here too, so a local run starts at most `GPUs x runs_per_gpu` training jobs at
    once (Snakemake's `gpu` is only a counter). Snakefile code cannot tell a cluster run from a local
    one; on a cluster the jobs get their GPU from the scheduler and the count seen here is only a limit
    when the submit host itself has GPUs (then pass `--resources gpu=<jobs>` to override it).
    """
    devices = config["gpus"]["devices"]
    spec = devices if isinstance(devices, str) else ",".join(str(d) for d in devices)
    if spec == "none":
        return spec, 0
    from fedicra.gpu_slots import parse_gpus
    return spec, len(parse_gpus(spec)) * config["gpus"]["runs_per_gpu"]


GPU_SPEC, GPU_SLOTS = _gpu_plan()
USES_GPU = GPU_SPEC != "none"  # a job with no GPU in its slot runs on the CPU (no limit on an undeclared gpu)
SLOT_ARGS = (["--gpus", GPU_SPEC, "--runs-per-gpu", str(config["gpus"]["runs_per_gpu"])]
             + (["--lock-dir", str(config["gpus"]["lock_dir"])] if config["gpus"]["lock_dir"] else []))
GPU_RESOURCES = {"gpu": 1} if USES_GPU else {}
if USES_GPU and config["resources"]["gpu_model"]:
    GPU_RESOURCES["gpu_model"] = config["resources"]["gpu_model"]
if GPU_SLOTS and "gpu" not in workflow.global_resources:  # an explicit --resources gpu=N wins
    workflow.register_resource("gpu", GPU_SLOTS)
if USES_GPU:
    print(f"fedicra workflow: {GPU_SLOTS or 'no'} local GPU slots (gpus.devices: {GPU_SPEC})"
          + ("" if GPU_SLOTS else "; local jobs train on the CPU"), file=sys.stderr)


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
    assignment=ASSIGNMENT_REGEX,
    seed=r"\d+",
    holdout=r"\d+",
