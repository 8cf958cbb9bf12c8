"""Pieces several personalized methods share: the head/body schedule and the site-contrastive term."""
from __future__ import annotations

from typing import Callable

import torch

from fedicra.errors import UserError

HEAD = "decoder.out_conv"


def is_head(name: str) -> bool:
    return name.startswith(HEAD + ".")


def head_then_body(step_in_round: int, local_steps: int, rep_iters: int) -> Callable[[str], bool]:
    """Upstream's FedRep schedule: the head alone for `local_steps - rep_iters` steps, then the body."""
    if not 0 < rep_iters < local_steps:
        raise UserError(f"method_params.rep_iters: must be between 1 and local_steps-1 ({local_steps}), got {rep_iters}")
    if step_in_round < local_steps - rep_iters:
        return is_head
    return lambda name: not is_head(name)


def other_sites(own: int, num_sites: int, faithful: bool) -> list[int]:
    """Site codes used as negatives; faithful reproduces upstream's `site or own` substitution for 0."""
    return [(k or own) if faithful else k for k in range(num_sites) if k != own]


def site_contrast(model: torch.nn.Module, images: torch.Tensor, output: dict, faithful: bool) -> torch.Tensor:
    """L_SC (reference 4.5) for a model with site channel selection.

    Intended: the other sites' attentions come from the PCS alone on this pass's bottleneck (one encoder
    pass). Faithful: K-1 extra full forward passes in train mode without gradient (BatchNorm statistics
    updated, fresh dropout), with upstream's site-0 bug.
    """
    from fedicra.losses import site_contrastive_loss

    own = model.site
    if faithful:
        with torch.no_grad():
            others = [model(images, site=k)["attention"] for k in other_sites(own, model.num_sites, True)]
    else:
        others = [model.site_attention(output["bottleneck"], k) for k in other_sites(own, model.num_sites, False)]
    return site_contrastive_loss(output["attention"], others)
