"""Turn a run configuration into the pieces both sides need: manifest, label kinds, clients.

`assemble(config)` is the one experiment assembly every backend shares; a backend adds only its
transport: `assemble(config).federation(transport, run_dir).run()`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedicra.errors import UserError
from fedicra.fl.client import Client, SiteData
from fedicra.fl.method import Method


@dataclass(frozen=True)
class Experiment:
    """A run configuration resolved into its method, dataset manifest and client keys."""

    config: dict[str, Any]
    method: Method
    manifest: Any
    keys: list[int]

    def federation(self, transport, run_dir: str | Path):
        """The round loop of this experiment over `transport`, writing `run_dir`."""
        from fedicra.fl.server import Federation

        return Federation(self.config, self.method, self.manifest, self.keys, transport, Path(run_dir))


def assemble(config: dict[str, Any]) -> Experiment:
    """Seed and size this process for the run, then build the method, manifest and client keys."""
    from fedicra.fl.registry import build_method
    from fedicra.seeding import apply_threads, seed_everything

    apply_threads(config)
    seed_everything(config["seed"])
    method = build_method(config)
    manifest = load_manifest(config)
    return Experiment(config=config, method=method, manifest=manifest, keys=client_keys(config, manifest, method))


def load_manifest(config: dict[str, Any]):
    from fedicra.data.manifest import Manifest

    return Manifest.load(config["dataset"], task=config.get("task"))


def site_indices(config: dict[str, Any], manifest) -> list[int]:
    """The sites that train: `sites` (all when null) without the held-out site of a leave-one-site-out run."""
    count = len(manifest.sites)
    sites = list(range(count)) if config.get("sites") is None else list(config["sites"])
    bad = [s for s in sites if s >= count]
    if bad:
        raise UserError(f"option sites: site {bad[0]} does not exist ({config['dataset']} has {count} sites)")
    holdout = holdout_site(config, manifest)
    sites = [s for s in sites if s != holdout]
    if not sites:
        raise UserError("option sites: no site selected" + (" besides holdout_site" if holdout is not None else ""))
    return sites


def holdout_site(config: dict[str, Any], manifest) -> int | None:
    """The held-out site of a leave-one-site-out run (None when off), checked against the dataset."""
    holdout = config.get("holdout_site")
    if holdout is not None and holdout >= len(manifest.sites):
        raise UserError(f"option holdout_site: site {holdout} does not exist "
                        f"({config['dataset']} has {len(manifest.sites)} sites)")
    return holdout


def label_kinds(config: dict[str, Any], manifest, method: Method) -> list[str]:
    from fedicra.data.assignment import resolve_assignment

    if method.labels is not None:
        return [method.labels] * len(manifest.sites)
    return list(resolve_assignment(config["assignment"], manifest))


def client_keys(config: dict[str, Any], manifest, method: Method) -> list[int]:
    """Site indices for per-site methods; a single key 0 for pooled (centralized) methods."""
    return [0] if method.topology == "pooled" else site_indices(config, manifest)


@functools.lru_cache(maxsize=64)
def _site_data(root: str, task, site: int, label: str, val_fraction: float, seed: int) -> SiteData:
    # Datasets are immutable, so processes that serve many rounds (Flower nodes) load them once.
    from fedicra.data.dataset import SiteDataset
    from fedicra.data.manifest import Manifest

    manifest = Manifest.load(root, task=task)
    common = dict(root=root, manifest=manifest, site=site, val_fraction=val_fraction, seed=seed)
    return SiteData(site=site, name=manifest.sites[site].name, label=label,
                    train=SiteDataset(split="train", label=label, **common),
                    val=SiteDataset(split="val", label="mask", **common),
                    test=SiteDataset(split="test", label="mask", **common))


def site_data(config: dict[str, Any], manifest, method: Method, site: int) -> SiteData:
    labels = label_kinds(config, manifest, method)
    return _site_data(str(config["dataset"]), config.get("task"), site, labels[site], config["val_fraction"],
                      config["seed"])


def make_client(config: dict[str, Any], method: Method, key: int, manifest=None) -> Client:
    manifest = manifest or load_manifest(config)
    held = site_indices(config, manifest) if method.topology == "pooled" else [key]
    client = Client.create(key, config, manifest, method, [site_data(config, manifest, method, s) for s in held])
    holdout = holdout_site(config, manifest)
    if method.topology == "pooled" and holdout is not None:
        # The pooled model never leaves its client, so the pool scores it on the held-out site's test
        # split (only `test` of it is ever read: see Client.final_scores).
        client.unseen = site_data(config, manifest, method, holdout)
    return client
