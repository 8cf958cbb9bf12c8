"""Pieces several personalized methods share: the head/body schedule and the site-contrastive term."""
from __future__ import annotations

from typing import Callable

import torch

from fedicra.errors import UserError
from fedicra.fl import schedule
from fedicra.fl.hyperparameters import Param
from fedicra.models.groups import is_head

# How the site-contrastive term is computed (reference 4.5, quirk 25):
LCFED = "lcfed"                  # intended: detached bottleneck, gradient into the channel selection only
VALUE_ONLY = "value_only"        # faithful FedLC (FedLPPA v4): computed under no_grad, trains nothing
UPSTREAM_FEDICRA = "upstream"    # faithful FedICRA: own attention with gradient, others detached


REP_ITERS = Param(None, "body steps at the end of each round (upstream 3 of 10; null = the same share "
                        "of this run's local steps)", kind=int, low=1)


def body_steps(hp_value, config: dict) -> int:
    """FedRep's `rep_iters`: upstream's 3 of 10 local steps, as the same share of this run's round."""
    return schedule.steps_in_round(3, config) if hp_value is None else hp_value


def head_then_body(step_in_round: int, local_steps: int, rep_iters: int) -> Callable[[str], bool]:
    """Upstream's FedRep schedule: the head alone for `local_steps - rep_iters` steps, then the body."""
    if not 0 < rep_iters < local_steps:
        raise UserError(f"method_params.rep_iters: must be between 1 and local_steps-1 ({local_steps - 1}), "
                        f"got {rep_iters}")
    if step_in_round < local_steps - rep_iters:
        return is_head
    return lambda name: not is_head(name)


def other_sites(own: int, num_sites: int, faithful: bool) -> list[int]:
    """Site codes used as negatives; faithful reproduces upstream's `site or own` substitution for 0."""
    return [(k or own) if faithful else k for k in range(num_sites) if k != own]


def site_contrast(model: torch.nn.Module, images: torch.Tensor, output: dict, mode: str) -> torch.Tensor:
    """L_SC (reference 4.5) for a model with site channel selection, in one of three forms.

    LCFED: every attention comes from the channel selection alone on the detached bottleneck of this
    pass, so only the channel-selection module learns from the term (LC-Fed). VALUE_ONLY and
    UPSTREAM_FEDICRA run K-1 extra full forward passes in train mode without gradient (BatchNorm
    statistics updated, fresh dropout) with upstream's site-0 bug; VALUE_ONLY also computes the MSE
    without gradient, UPSTREAM_FEDICRA keeps the gradient of the own attention (it reaches the encoder).
    """
    from fedicra.losses import site_contrastive_loss

    own = model.site
    if mode == LCFED:
        bottleneck = output["bottleneck"].detach()
        others = [model.site_attention(bottleneck, k) for k in other_sites(own, model.num_sites, False)]
        return site_contrastive_loss(model.site_attention(bottleneck, own), others)
    if mode not in (VALUE_ONLY, UPSTREAM_FEDICRA):
        raise ValueError(f"unknown site-contrast mode {mode!r}")
    with torch.no_grad():
        others = [model(images, site=k)["attention"] for k in other_sites(own, model.num_sites, True)]
        if mode == VALUE_ONLY:
            return site_contrastive_loss(output["attention"], others)
    return site_contrastive_loss(output["attention"], others)
