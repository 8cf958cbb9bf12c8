"""Channel-selection-based site contrastive loss L_SC (reference 4.5)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fedicra.errors import UserError


def site_contrastive_loss(own_attention: torch.Tensor, other_attentions: list[torch.Tensor]) -> torch.Tensor:
    """-(1/(K-1)) * sum_k MSE(own, stopgrad(other_k)): pushes the own site's channel attention away
    from the attention the other K-1 site codes give on the same batch.

    With no other site (a one-site federation) the loss is 0, still connected to ``own_attention``.
    """
    if len(other_attentions) == 0:
        return own_attention.sum() * 0.0
    for k, other in enumerate(other_attentions):
        if other.shape != own_attention.shape:
            raise UserError(
                f"site_contrastive_loss: other_attentions[{k}] has shape {tuple(other.shape)}, "
                f"expected {tuple(own_attention.shape)}"
            )
    total = sum(F.mse_loss(own_attention, other.detach()) for other in other_attentions)
    return -total / len(other_attentions)
