"""Gated CRF loss (Obukhov et al. 2019) with one Gaussian kernel and the Potts model (reference 4.3).

  L = 1/(B H W) * sum_i sum_{j in W(i), j != i, j inside the image} K_ij (1 - sum_c P_ic P_jc)
  K_ij = exp(-1/2 (|pos_i - pos_j|^2 / sigma_xy^2 + |I_i - I_j|^2 / sigma_rgb^2))

The window is the (2r+1)^2 square. Instead of unfolding a [B, (2r+1)^2, C, H, W] tensor, the loss
loops over the window offsets with shifted slices; K is symmetric, so only half of the offsets are
visited and each counts twice. A custom backward recomputes the kernels instead of storing them, so
peak memory is a few [B,C,H,W] buffers (384 px, batch 12 on a GPU is fine). The kernel carries no
gradient (the image is a fixed guide).

Upstream unfolds zero-padded maps, so pairs that leave the image add a gradient-free constant to
the value; here they are left out (same gradient; a perfect segmentation scores exactly 0).
"""
from __future__ import annotations

import torch

from fedicra.errors import UserError


def _half_window(radius: int):
    for dy in range(0, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy > 0 or dx > 0:
                yield dy, dx


def _pair_slices(height: int, width: int, dy: int, dx: int):
    """Slices (first, second) so that second[y, x] is first[y, x] shifted by (dy, dx)."""
    x0, x1 = max(0, -dx), width - max(0, dx)
    first = (slice(None), slice(None), slice(0, height - dy), slice(x0, x1))
    second = (slice(None), slice(None), slice(dy, height), slice(x0 + dx, x1 + dx))
    return first, second


def _kernel(image, first, second, dy, dx, sigma_xy, sigma_rgb):
    diff = image[first] - image[second]
    energy = (dy * dy + dx * dx) / sigma_xy**2 + (diff * diff).sum(dim=1, keepdim=True) / sigma_rgb**2
    return torch.exp(-0.5 * energy)


class _GatedCRF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, probs, image, radius, sigma_xy, sigma_rgb):
        batch, _, height, width = probs.shape
        image = image.to(probs.dtype)
        total = probs.new_zeros(())
        for dy, dx in _half_window(radius):
            if dy >= height or abs(dx) >= width:
                continue
            first, second = _pair_slices(height, width, dy, dx)
            k = _kernel(image, first, second, dy, dx, sigma_xy, sigma_rgb)
            agree = (probs[first] * probs[second]).sum(dim=1, keepdim=True)
            total = total + (k * (1.0 - agree)).sum()
        ctx.save_for_backward(probs, image)
        ctx.settings = (radius, sigma_xy, sigma_rgb)
        return 2.0 * total / (batch * height * width)

    @staticmethod
    def backward(ctx, grad_out):
        probs, image = ctx.saved_tensors
        radius, sigma_xy, sigma_rgb = ctx.settings
        batch, _, height, width = probs.shape
        grad = torch.zeros_like(probs)
        for dy, dx in _half_window(radius):
            if dy >= height or abs(dx) >= width:
                continue
            first, second = _pair_slices(height, width, dy, dx)
            k = _kernel(image, first, second, dy, dx, sigma_xy, sigma_rgb)
            grad[first] -= k * probs[second]
            grad[second] -= k * probs[first]
        scale = 2.0 * grad_out / (batch * height * width)
        return grad * scale, None, None, None, None


UPSTREAM_RADIUS, UPSTREAM_SIGMA_XY = 5, 6.0


def scaled_window(side: int, upstream_side: int, faithful: bool) -> dict[str, float]:
    """Upstream's radius 5 and sigma_xy 6 are pixels of a `upstream_side` image (FAZ 256, ODOC 384).
    Intended (quirk 28): the same lengths relative to the image side (radius at least 1); faithful:
    upstream's pixels."""
    if faithful:
        return {"radius": UPSTREAM_RADIUS, "sigma_xy": UPSTREAM_SIGMA_XY}
    scale = side / upstream_side
    return {"radius": max(1, int(UPSTREAM_RADIUS * scale + 0.5)), "sigma_xy": UPSTREAM_SIGMA_XY * scale}


def gated_crf_loss(
    probs: torch.Tensor,
    image: torch.Tensor,
    radius: int = UPSTREAM_RADIUS,
    sigma_xy: float = UPSTREAM_SIGMA_XY,
    sigma_rgb: float = 0.1,
) -> torch.Tensor:
    """Gated CRF loss of class probabilities ``probs`` [B,C,H,W] guided by ``image`` [B,Ci,H,W]."""
    if probs.dim() != 4 or image.dim() != 4:
        raise UserError("gated_crf_loss: probs and image must be 4-D [B,C,H,W]")
    if probs.shape[0] != image.shape[0] or probs.shape[2:] != image.shape[2:]:
        raise UserError(
            f"gated_crf_loss: image {tuple(image.shape)} does not match probs {tuple(probs.shape)} "
            "in batch or size"
        )
    if int(radius) != radius or radius < 1:
        raise UserError(f"gated_crf_loss: radius must be a positive integer, got {radius}")
    if sigma_xy <= 0 or sigma_rgb <= 0:
        raise UserError(f"gated_crf_loss: sigmas must be positive, got {sigma_xy} and {sigma_rgb}")
    return _GatedCRF.apply(probs, image.detach(), int(radius), float(sigma_xy), float(sigma_rgb))
