"""Fake run directories for tests and report previews, written through `fedicra.record` like real runs.

The numbers are random draws with a fixed seed around a per-method quality level, so a test can
build a benchmark where one method is clearly better, or where two methods are identical, without
training anything. Nothing here is a result. The layout is the engine's: `train_loss`, a `round`
column in cases.csv, `global` rows only for methods with a global model, one sample file per site,
package versions under `environment.packages`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fedicra import record

TASK_STRUCTURES = {"faz": ("faz",), "odoc": ("cup", "disc")}
TASK_CLASSES = {"faz": 2, "odoc": 3}
DEFAULT_LABELS = ("scribble_noisy", "keypoint", "block", "box", "scribble")


def assignment_labels(assignment: str, num_sites: int) -> tuple[str, ...]:
    """Label kind per site as `fedicra.data.assignment` resolves it, with DEFAULT_LABELS as the upstream map."""
    import re

    upstream = [DEFAULT_LABELS[i % len(DEFAULT_LABELS)] for i in range(num_sites)]
    rotate = re.fullmatch(r"rotate(\d+)", assignment)
    if rotate:
        k = int(rotate.group(1))
        return tuple(upstream[(i - k) % num_sites] for i in range(num_sites))
    return tuple(upstream) if assignment == "upstream" else (assignment,)


def fake_config(task: str, method: str, assignment: str, seed: int, rounds: int, **overrides) -> dict:
    """A resolved run configuration as the engine records it (every default filled in)."""
    from fedicra.fl.config import load_config

    base = {"dataset": f"/data/{task}", "assignment": assignment, "method": method.split("-")[0], "seed": seed,
            "rounds": rounds, "local_steps": 2, "batch_size": 4, "device": "cpu", "progress": False}
    return load_config(base={**base, **overrides})


def fake_resolved(config: dict, task: str, num_sites: int, img_size: int) -> dict:
    """The `resolved` schedule values, computed by the engine's own function for this configuration."""
    from fedicra.data.manifest import Manifest
    from fedicra.fl.registry import build_method
    from fedicra.fl.schedule import resolved_values

    from fedicra.fl.registry import load_methods

    manifest = Manifest.for_task(task, "fake", [f"Domain{k + 1}" for k in range(num_sites)], img_size=img_size)
    # a fake method name (tests use made-up ones) resolves like FedAvg, the base of every method
    known = config if config["method"] in load_methods() else {**config, "method": "fedavg", "method_params": {}}
    return resolved_values(known, build_method(known), manifest)


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
    labels: tuple[str, ...] | None = None,
    global_model: bool = True,
    site_quality: dict[int, float] | None = None,
    plateau: bool = True,
    config: dict | None = None,
    holdout_site: int | None = None,
    unseen_models: tuple[str, ...] | None = None,
) -> Path:
    """Write one complete run directory; `quality` is the mean Dice the method reaches.

    Per-case noise depends on (seed, site, case) only, unless `noise_seed` is given, so two methods
    with the same quality produce identical scores (paired differences of zero). `site_quality`
    overrides the level of single sites; `plateau=False` makes validation Dice still rise at the end.
    `holdout_site` makes it a leave-one-site-out run: that site does not train and gets `unseen_models`
    rows (default: unseen_global when there is a global model, and unseen_personalized).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    structures = TASK_STRUCTURES[task]
    labels = labels or assignment_labels(assignment, num_sites)
    config = config or fake_config(task, method, assignment, seed, rounds, holdout_site=holdout_site)
    if "resolved" not in config:
        config = {**config, "resolved": fake_resolved(config, task, num_sites, img_size)}
    record.write_config(run_dir, config)
    level = {site: (site_quality or {}).get(site, quality) for site in range(num_sites)}
    trained = [site for site in range(num_sites) if site != holdout_site]
    if unseen_models is None:
        unseen_models = (("unseen_global",) if global_model else ()) + ("unseen_personalized",)

    rows = []
    for r in range(1, rounds + 1):
        # plateaued curves reach their level at half the run; others rise linearly to the end
        progress = min(1.0, 2 * r / rounds) if plateau else r / rounds
        for site in trained:
            rng = np.random.default_rng([seed, site, r, 7])
            dice = [float(np.clip(level[site] * progress + rng.normal(0, 0.005), 0, 1)) for _ in structures]
            rows.append({"round": r, "site": site, "train_loss": float(1.0 / r + rng.random() * 0.1),
                         "seconds": 0.5, "bytes_up": 1000 * (site + 1), "bytes_down": 2000,
                         **_scores(structures, dice, [0.0] * len(structures))})
        rows.append({"round": r, "site": -1, "train_loss": 1.0 / r, "seconds": 0.5 * len(trained),
                     "bytes_up": 1000 * sum(s + 1 for s in trained), "bytes_down": 2000 * len(trained)})
    record.write_rounds(run_dir, rows)

    candidates = [("personalized", "last"), ("personalized", "best_val")]
    candidates += [("personalized", "best_test")] if config["select_on_test"] else []
    candidates += [("global", "last")] if global_model else []
    rows = []
    # a held-out site is scored by the models a new site gets, a little below the trained sites' level
    offsets = {"personalized": 0.0, "global": -0.05, "unseen_global": -0.12, "unseen_personalized": -0.10}
    for site in range(num_sites):
        held_out = site == holdout_site
        for c in range(cases_per_site):
            base_rng = np.random.default_rng([seed, site, c] if noise_seed is None else [noise_seed, seed, site, c])
            noise = base_rng.normal(0, 0.03, size=len(structures))
            for model, selection in ([(m, "last") for m in unseen_models] if held_out else candidates):
                offset = offsets[model] + (0.01 if selection == "best_test" else 0.0)
                dice = [float(np.clip(level[site] + offset + n, 0.0, 1.0)) for n in noise]
                scores = _scores(structures, dice, noise)
                rows.append({"site": site, "site_name": f"Domain{site + 1}", "label": labels[site % len(labels)],
                             "case": f"case{c:03d}", "model": model, "selection": selection,
                             "round": rounds if selection == "last" else max(1, rounds - 1), **scores})
    num_cases = record.write_cases(run_dir, rows)

    rng = np.random.default_rng([seed, 99])
    yy, xx = np.mgrid[:img_size, :img_size]
    mask = ((yy - img_size / 2) ** 2 + (xx - img_size / 2) ** 2 < (img_size / 4) ** 2).astype(np.uint8)
    for site in trained:
        label = np.full(mask.shape, TASK_CLASSES[task], dtype=np.uint8)
        label[img_size // 2, img_size // 4: 3 * img_size // 4] = mask[img_size // 2, img_size // 4: 3 * img_size // 4]
        shape = (3, img_size, img_size) if task == "odoc" else (img_size, img_size)
        record.write_site_samples(run_dir, site, {
            "image": rng.random(shape).astype(np.float32), "mask": mask, "train_image": rng.random(shape).astype(np.float32),
            "train_label": label, "prediction": np.where(rng.random(mask.shape) < quality, mask, 1 - mask).astype(np.uint8)})

    packages = {"fedicra": "0.1.0", "torch": "2.13.0", "flwr": "1.42.0"}
    summary = {
        "wall_clock_s": 10.0 + 5 * quality, "rounds_wall_clock_s": 10.0 + 5 * quality,
        "checkpoint_wall_clock_s": 0.1, "peak_rss_mb": 500.0,
        "peak_gpu_mb": None, "rounds": rounds, "num_cases": num_cases,
        "gradient_steps": {str(site): int(config["resolved"]["gradient_steps_per_site"]) for site in trained},
        "bytes_up": int(rounds * 1000 * sum(s + 1 for s in trained)), "bytes_down": int(rounds * 2000 * len(trained)),
        "bytes_per_round": float(1000 * sum(s + 1 for s in trained) + 2000 * len(trained)),
        "protocol": {"method": config["method"], "models": ["personalized"] + (["global"] if global_model else []),
                     "selection": [s for m, s in candidates if m == "personalized"], "faithful": config["faithful"],
                     "metric_policy": config["metric_policy"], "backend": config["backend"],
                     "holdout_site": holdout_site},
        "environment": {"python": "3.11.7", "platform": "Linux-fake", "packages": packages, "git_revision": "0" * 40,
                        "device": "cpu", "device_requested": config["device"], "gpu": None, "precision": "fp32",
                        "cuda_visible_devices": None, "cpu_count": 2},
    }
    record.write_summary(run_dir, summary)
    return run_dir


def _scores(structures, dice: list[float], noise) -> dict[str, float]:
    """Every metric column of the record from a Dice per structure (HD95 and ASSD fall as Dice rises)."""
    scores = {}
    for s, d, n in zip(structures, dice, noise):
        scores.update({f"dice_{s}": d, f"hd95_{s}": float((1.0 - d) * 40.0 + abs(n) * 10),
                       f"assd_{s}": float((1.0 - d) * 10.0), f"jaccard_{s}": d / (2.0 - d)})
    scores["mean_dice"] = float(np.mean(dice))
    scores["mean_hd95"] = float(np.mean([scores[f"hd95_{s}"] for s in structures]))
    return scores


def write_fake_benchmark(root: Path, plan: dict[tuple[str, str, str], float], *, seeds=(0, 1, 2), holdouts=(),
                         **kwargs) -> list[Path]:
    """Write `root/runs/<dataset>/<assignment>/<method>/seed<k>` for every ((dataset, assignment, method): quality),
    and with `holdouts` the leave-one-site-out runs `.../<method>/holdout<h>/seed<k>` of those sites.

    The task is taken from the dataset name (`...odoc...` means ODOC, anything else FAZ). `quality`
    may also be a dict of `write_fake_run` keyword arguments (with a `quality` entry), and a `holdouts`
    entry that replaces the common one (e.g. `()` for a method that gives a new site nothing).
    """
    dirs = []
    for (dataset, assignment, method), spec in plan.items():
        task = "odoc" if "odoc" in dataset else "faz"
        options = {**kwargs, **(spec if isinstance(spec, dict) else {"quality": spec})}
        sites = options.pop("holdouts", holdouts)
        for seed in seeds:
            base = Path(root) / "runs" / dataset / assignment / method
            dirs.append(write_fake_run(base / f"seed{seed}", task=task, method=method, assignment=assignment,
                                       seed=seed, **options))
            for site in sites:
                dirs.append(write_fake_run(base / f"holdout{site}" / f"seed{seed}", task=task, method=method,
                                           assignment=assignment, seed=seed, holdout_site=site, **options))
    return dirs
