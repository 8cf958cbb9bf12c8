"""Partial cross-entropy: softmax cross-entropy over the labelled pixels only (reference 4.2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fedicra.errors import UserError


def partial_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` [B,C,H,W] against ``labels`` [B,H,W] where labels != ignore_index.

    With no labelled pixel the result is 0 and still connected to ``logits`` (zero gradient), so a
    batch of unlabelled images does not break ``backward()``.
    """
    if labels.shape != logits.shape[:1] + logits.shape[2:]:
        raise UserError(
            f"partial_cross_entropy: labels shape {tuple(labels.shape)} does not match logits "
            f"{tuple(logits.shape)} without the class axis"
        )
    labelled = labels != ignore_index
    total = F.cross_entropy(logits, labels.long(), ignore_index=ignore_index, reduction="sum")
    # clamp avoids 0/0 without a host sync: the sum is 0 when nothing is labelled
    return total / labelled.sum().clamp(min=1).to(total.dtype)
