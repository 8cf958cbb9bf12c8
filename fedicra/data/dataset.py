"""One site's cases as a PyTorch dataset: `train` (sparse labels), `val` (held-out training cases with
full masks) and `test` (full masks). Datasets here are small, so everything is loaded at construction.

Upstream has no validation split and selects models on the test set (quirk 7); `val` is a seeded part of
the training cases, never seen in training, scored with their full `mask`.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from fedicra.data.augment import augment as augment_pair
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
                 augment: bool = False, val_fraction: float = 0.2, seed: int = 0):
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
        check_label_kind(label, "label")
        self.manifest = manifest
        self.site = manifest.site_index(site)
        self.site_name = manifest.sites[self.site].name
        self.split = split
        self.label_kind = label if split == "train" else FULL_LABEL
        self.augment = augment
        self.image_fill = manifest.preset.image_fill
        self.label_fill = manifest.unlabeled

        if split == "test":
            paths = list_cases(root, manifest, self.site, "test")
        else:
            train, val = train_val_split(list_cases(root, manifest, self.site, "train"), val_fraction, seed, self.site)
            paths = train if split == "train" else val
        if not paths:
            raise DataError(f"site {self.site_name}: the {split} split is empty "
                            f"({'too few training cases or val_fraction=0' if split == 'val' else 'no cases'})")
        images, labels = [], []
        for path in paths:
            arrays = read_case(path, manifest, keys=("image", self.label_kind))
            images.append(arrays["image"])
            labels.append(arrays[self.label_kind])
        self.images = np.stack(images)
        self.labels = np.stack(labels)
        self.cases = [p.stem for p in paths]
        self.rng = np.random.default_rng([seed, self.site, 1])

    def reseed(self, seed: int) -> None:
        """New augmentation stream (called per DataLoader worker by `seed_worker`)."""
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict:
        image, label = self.images[index], self.labels[index]
        if self.augment:
            image, label = augment_pair(image, label, self.rng, self.image_fill, self.label_fill)
        return {
            "image": torch.from_numpy(np.array(image, dtype=np.float32)),
            "label": torch.from_numpy(label.astype(np.int64)),
            "case": self.cases[index],
        }


def seed_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: each worker's augmentation follows the loader's (seeded) base seed."""
    info = get_worker_info()
    if info is not None and isinstance(info.dataset, SiteDataset):
        info.dataset.reseed(info.seed)
