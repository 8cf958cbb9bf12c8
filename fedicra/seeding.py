"""Seeds, random streams and thread counts of a process. Every random draw in a run comes from a named
stream keyed by integers (seed, stream name, site, epoch, ...), so a run resumed from a checkpoint draws
exactly what it would have drawn, and draws of one kind never shift those of another."""
from __future__ import annotations

import enum
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


class Stream(enum.IntEnum):
    """The named random streams of a run (they replace magic epoch offsets such as `1 << 30`)."""

    TRAINING = 1          # batch order and augmentation of the local training steps
    TORCH = 2             # a client's torch generator (dropout)
    ALA = 3               # batches of FedALA's adaptive aggregation epochs
    PRETRAINING = 4       # batches of FedAP's pooled pre-training
    STATISTICS = 5        # batches of FedAP's BatchNorm statistics pass


def stream(seed: int, name: Stream, *keys: int) -> np.random.Generator:
    """An independent numpy generator of stream `name` for the run seed and further keys (site, epoch, ...)."""
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in (seed, Stream(name), *keys)])


def apply_threads(config: dict) -> None:
    """Honour the run config's `threads` (torch intra-op threads) in this process."""
    if config.get("threads"):
        import torch

        torch.set_num_threads(int(config["threads"]))
