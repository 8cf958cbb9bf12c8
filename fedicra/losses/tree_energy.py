"""Multiscale tree energy loss L_MTEL (reference 4.4), recursive (FedICRA), additive and single-scale.

P = softmax(logits). A low-level tree guided by the image filters P (sigma 0.02, no gradient into
its edge weights); high-level trees guided by the auxiliary heads' logits, bilinearly upsampled to
the image size, filter the result further (sigma 1, gradient flows through the edge weights into
the auxiliary heads: their only training signal). The loss compares P with the filtered target on
the unlabelled pixels:  weight * sum_{b,c,u} U |P - AS| / N_unlabelled  (0 when N = 0).
Targets are not detached, as upstream.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fedicra.errors import UserError
from fedicra.losses.tree_filter import tree_filter

MODES = ("recursive", "add", "single")


def _energy(probs, target, unlabelled, count):
    return (unlabelled * (probs - target).abs()).sum() / count


def tree_energy_loss(
    logits: torch.Tensor,
    image_guide: torch.Tensor,
    aux_guides: list[torch.Tensor],
    labels: torch.Tensor,
    ignore_index: int,
    weight: float = 0.1,
    mode: str = "recursive",
    low_sigma: float = 0.02,
    high_sigma: float = 1.0,
) -> torch.Tensor:
    """Tree energy loss of ``logits`` [B,C,H,W] on the unlabelled pixels of ``labels`` [B,H,W].

    mode ``recursive``: AS0 = TF(P; image), AS_k = TF(AS_{k-1}; aux_k) for every aux guide, loss on
    the last one; ``add``: AS_k = TF(AS0; aux_k) for every aux guide, the loss terms are summed;
    ``single``: AS1 = TF(AS0; aux_0) only.
    """
    if mode not in MODES:
        raise UserError(f"tree_energy_loss: mode must be one of {', '.join(MODES)}, got {mode!r}")
    if len(aux_guides) == 0:
        raise UserError("tree_energy_loss: at least one auxiliary guide (aux head output) is needed")
    batch, _, height, width = logits.shape
    if labels.shape != (batch, height, width):
        raise UserError(
            f"tree_energy_loss: labels shape {tuple(labels.shape)} does not match logits "
            f"{tuple(logits.shape)} without the class axis"
        )
    if image_guide.shape[0] != batch or image_guide.shape[2:] != (height, width):
        raise UserError(
            f"tree_energy_loss: image_guide {tuple(image_guide.shape)} does not match logits "
            f"{tuple(logits.shape)} in batch or size"
        )
    probs = torch.softmax(logits, dim=1)
    unlabelled = (labels == ignore_index).unsqueeze(1).to(probs.dtype)
    count = unlabelled.sum().clamp(min=1)  # the sum below is 0 when nothing is unlabelled
    image = image_guide.detach()
    if image.shape[1] == 1:  # upstream repeats a grey image to 3 channels (it triples distances)
        image = image.repeat(1, 3, 1, 1)
    guides = [
        F.interpolate(aux, size=(height, width), mode="bilinear", align_corners=False)
        for aux in (aux_guides[:1] if mode == "single" else aux_guides)
    ]
    low = tree_filter(probs, image, low_sigma, learn_guide=False)
    if mode == "add":
        total = sum(
            _energy(probs, tree_filter(low, g, high_sigma, learn_guide=True), unlabelled, count)
            for g in guides
        )
    else:
        target = low
        for g in guides:
            target = tree_filter(target, g, high_sigma, learn_guide=True)
        total = _energy(probs, target, unlabelled, count)
    return weight * total
