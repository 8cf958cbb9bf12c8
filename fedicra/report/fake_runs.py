"""Contract-conforming fake run directories (docs/contracts.md "Runs") for tests and report previews.

The numbers are random draws with a fixed seed around a per-method quality level, so a test can
build a benchmark where one method is clearly better, or where two methods are identical, without
training anything. Nothing here is a result.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from fedicra.report.io import atomic_write_text, atomic_write_npz

TASK_STRUCTURES = {"faz": ("faz",), "odoc": ("cup", "disc")}
TASK_CLASSES = {"faz": 2, "odoc": 3}
DEFAULT_LABELS = ("scribble_noisy", "keypoint", "block", "box", "scribble")


def write_fake_run(
    run_dir: Path,
    *,
    task: str = "faz",
    method: str = "fedavg",
    assignment: str = "upstream",
    seed: int = 0,
    quality: float = 0.8,
    num_sites: int = 3,
    cases_per_site: int = 6,
    rounds: int = 4,
    img_size: int = 16,
    noise_seed: int | None = None,
    labels: tuple[str, ...] = DEFAULT_LABELS,
) -> Path:
    """Write one complete run directory; `quality` is the mean Dice the method reaches.

    Per-case noise depends on (seed, site, case) only, unless `noise_seed` is given, so two methods
    with the same quality produce identical scores (paired differences of zero).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    structures = TASK_STRUCTURES[task]
    if assignment in ("scribble", "mask"):
        labels = (assignment,)
    config = {
        "dataset": f"/data/{task}", "assignment": assignment, "method": method.split("-")[0],
        "method_params": {}, "seed": seed, "rounds": rounds, "local_steps": 2, "batch_size": 4,
        "lr": 0.01, "eval_every": 1, "val_fraction": 0.2, "device": "cpu", "faithful": False,
        "backend": "inprocess",
    }
    atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2))

    rows = []
    for site in range(num_sites):
        for r in range(1, rounds + 1):
            rng = np.random.default_rng([seed, site, r, 7])
            dice = {f"dice_{s}": float(np.clip(quality * r / rounds + rng.normal(0, 0.02), 0, 1))
                    for s in structures}
            rows.append({"round": r, "site": site, "loss": float(1.0 / r + rng.random() * 0.1), **dice,
                         "mean_dice": float(np.mean(list(dice.values()))), "bytes_up": 1000 * (site + 1),
                         "bytes_down": 2000, "seconds": 0.5})
    _write_csv(run_dir / "rounds.csv", pd.DataFrame(rows))

    rows = []
    for site in range(num_sites):
        for c in range(cases_per_site):
            base_rng = np.random.default_rng([seed, site, c] if noise_seed is None else [noise_seed, seed, site, c])
            noise = base_rng.normal(0, 0.03, size=len(structures))
            for model in ("personalized", "global"):
                for selection in ("last", "best_val", "best_test"):
                    offset = (0.0 if model == "personalized" else -0.05) + (0.01 if selection == "best_test" else 0.0)
                    scores = {}
                    for s, n in zip(structures, noise):
                        dice = float(np.clip(quality + offset + n, 0.0, 1.0))
                        scores[f"dice_{s}"] = dice
                        scores[f"hd95_{s}"] = float((1.0 - dice) * 40.0 + abs(n) * 10)
                        scores[f"assd_{s}"] = float((1.0 - dice) * 10.0)
                        scores[f"jaccard_{s}"] = dice / (2.0 - dice)
                    scores["mean_dice"] = float(np.mean([scores[f"dice_{s}"] for s in structures]))
                    scores["mean_hd95"] = float(np.mean([scores[f"hd95_{s}"] for s in structures]))
                    rows.append({"site": site, "site_name": f"Domain{site + 1}", "label": labels[site % len(labels)],
                                 "case": f"case{c:03d}", "model": model, "selection": selection, **scores})
    _write_csv(run_dir / "cases.csv", pd.DataFrame(rows))

    rng = np.random.default_rng([seed, 99])
    shape = (num_sites, img_size, img_size)
    yy, xx = np.mgrid[:img_size, :img_size]
    disk = ((yy - img_size / 2) ** 2 + (xx - img_size / 2) ** 2 < (img_size / 4) ** 2).astype(np.uint8)
    mask = np.broadcast_to(disk, shape).copy()
    label = np.full(shape, TASK_CLASSES[task], dtype=np.uint8)
    label[:, img_size // 2, img_size // 4: 3 * img_size // 4] = mask[:, img_size // 2, img_size // 4: 3 * img_size // 4]
    image = rng.random((num_sites, 3, img_size, img_size) if task == "odoc" else shape).astype(np.float32)
    prediction = np.where(rng.random(shape) < quality, mask, 1 - mask).astype(np.uint8)
    atomic_write_npz(run_dir / "predictions.npz", image=image, mask=mask, label=label, prediction=prediction,
                     site_names=np.array([f"Domain{k + 1}" for k in range(num_sites)]),
                     cases=np.array(["case000"] * num_sites))

    summary = {
        "wall_clock_s": 10.0 + 5 * quality, "peak_rss_mb": 500.0, "peak_gpu_mb": 0.0, "rounds": rounds,
        "bytes_up": int(rounds * 1000 * num_sites), "bytes_down": int(rounds * 2000 * num_sites),
        "protocol": {"faithful": False, "eval_policy": "intended", "models": ["personalized", "global"],
                     "selections": ["last", "best_val", "best_test"], "val_fraction": 0.2,
                     "backend": "inprocess"},
        "environment": {"python": "3.11.7", "torch": "2.13.0", "flwr": "1.42.0", "git_revision": "0" * 12,
                        "device": "cpu", "gpu_name": None},
    }
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    return run_dir


def write_fake_benchmark(root: Path, plan: dict[tuple[str, str, str], float], *, seeds=(0, 1, 2), **kwargs) -> list[Path]:
    """Write `root/runs/<dataset>/<assignment>/<method>/seed<k>` for every ((dataset, assignment, method): quality).

    The task is taken from the dataset name (`...odoc...` means ODOC, anything else FAZ).
    """
    dirs = []
    for (dataset, assignment, method), quality in plan.items():
        task = "odoc" if "odoc" in dataset else "faz"
        for seed in seeds:
            run_dir = Path(root) / "runs" / dataset / assignment / method / f"seed{seed}"
            dirs.append(write_fake_run(run_dir, task=task, method=method, assignment=assignment, seed=seed,
                                       quality=quality, **kwargs))
    return dirs


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame.to_csv(index=False))
