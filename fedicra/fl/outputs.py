"""The run directory: every file is written to a temporary name and renamed, so a reader (or a
Snakemake rule) never sees half a file; `summary.json` is written last and marks a complete run."""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fedicra.atomic import atomic_write


def atomic_torch_save(obj: Any, path: Path) -> None:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getvalue())


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(value: Any):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children, in MiB (Linux reports KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0


def peak_gpu_mb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def git_revision() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def environment_record(config: dict[str, Any]) -> dict[str, Any]:
    """Versions, revision and the device the run really used (`auto` resolved), for summary.json."""
    import importlib.metadata

    import torch

    from fedicra.fl.client import resolve_device

    packages = {}
    for name in ("fedicra", "torch", "flwr", "numpy", "scipy", "medpy", "numba", "pandas", "snakemake", "h5py"):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    device = resolve_device(config["device"])
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": packages,
            "git_revision": git_revision(), "device": str(device), "device_requested": config["device"],
            "gpu": gpu, "precision": str(config.get("precision", "fp32")),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "cpu_count": os.cpu_count()}
