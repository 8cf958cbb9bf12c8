"""Seeds, random streams and thread counts of a process. Every random draw in a run comes from a stream named by integers
(seed, site, step, ...), so a run resumed from a checkpoint draws exactly what it would have drawn."""
from __future__ import annotations

import random

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) and ask torch for deterministic kernels."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def stream(*keys: int) -> np.random.Generator:
    """An independent numpy generator for the given integer keys (e.g. seed, site, epoch)."""
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in keys])


def apply_threads(config: dict) -> None:
    """Honour the run config's `threads` (torch intra-op threads) in this process."""
    if config.get("threads"):
        import torch

        torch.set_num_threads(int(config["threads"]))
