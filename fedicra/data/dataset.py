"""One site's cases as a PyTorch dataset: `train` (sparse labels), `val` (held-out training cases with
full masks) and `test` (full masks). Datasets here are small, so everything is loaded at construction.
Augmentation is not done here: the client draws it per step from its named random stream.

Upstream has no validation split and selects models on the test set (quirk 7); `val` is a seeded part of
the training cases, never seen in training, scored with their full `mask`.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

from fedicra.data.errors import DataError
from fedicra.data.layout import list_cases, read_case
from fedicra.data.manifest import FULL_LABEL, Manifest, check_label_kind

SPLITS = ("train", "val", "test")


def train_val_split(cases: list, val_fraction: float, seed: int, site: int) -> tuple[list, list]:
    """Seeded partition of a site's training cases; at least one case always stays in training."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = len(cases)
    n_val = min(n - 1, max(1, round(val_fraction * n))) if val_fraction > 0 and n > 1 else 0
    order = np.random.default_rng([seed, site, 0]).permutation(n)
    val_idx = set(order[:n_val].tolist())
    train = [c for i, c in enumerate(cases) if i not in val_idx]
    val = [c for i, c in enumerate(cases) if i in val_idx]
    return train, val


class SiteDataset(Dataset):
    def __init__(self, root: str | os.PathLike, manifest: Manifest, site: int, split: str, label: str = FULL_LABEL,
                 val_fraction: float = 0.2, seed: int = 0):
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
        check_label_kind(label, "label")
        self.manifest = manifest
        self.site = manifest.site_index(site)
        self.site_name = manifest.sites[self.site].name
        self.split = split
        self.label_kind = label if split == "train" else FULL_LABEL

        if split == "test":
            paths = list_cases(root, manifest, self.site, "test")
        else:
            train, val = train_val_split(list_cases(root, manifest, self.site, "train"), val_fraction, seed, self.site)
            paths = train if split == "train" else val
        # An empty validation split is allowed (val_fraction 0, or a site with one training case):
        # that site then has no best-on-validation selection, only `last`.
        if not paths and split != "val":
            raise DataError(f"site {self.site_name}: the {split} split is empty (no cases)")
        arrays = [read_case(path, manifest, keys=("image", self.label_kind)) for path in paths]
        self.images = np.stack([a["image"] for a in arrays]) if arrays else np.zeros((0,), np.float32)
        self.labels = np.stack([a[self.label_kind] for a in arrays]) if arrays else np.zeros((0,), np.uint8)
        self.cases = [p.stem for p in paths]

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict:
        image, label = self.images[index], self.labels[index]
        return {
            "image": torch.from_numpy(np.array(image, dtype=np.float32)),
            "label": torch.from_numpy(label.astype(np.int64)),
            "case": self.cases[index],
        }
