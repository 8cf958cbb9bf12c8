"""Learnable tree filter (Song et al.) with an exact backward pass.

Y(u) = sum_v S(u,v) X(v) / sum_v S(u,v), with S(u,v) the product of the edge affinities
w_v = exp(-||G(v) - G(p(v))||^2 / sigma) along the path between u and v in the minimum spanning
tree of the guide G (reference section 4.4). The affinities are computed with ordinary torch ops,
so autograd carries their gradient into the guide; ``TreeFilterFunction`` takes (X, w) and returns
Y with the exact gradients with respect to both.

Backward (S is symmetric): with z = g / N1 (g = dL/dY, N1 = S 1), dL/dX = S z: one more filtering.
For the edge c -> p = p(c), for a signal x contracted with a cotangent a:
  d(a^T S x)/dw_c = A_a(c) (F_x(p) - w_c A_x(c)) + A_x(c) (F_a(p) - w_c A_a(c)),
where A_ and F_ are the up-pass and full aggregates. It is applied to the pairs (a=z, x=X) and, for
the normaliser, (a = -sum_k z_k Y_k, x = 1); stacking [X, 1] and [z, a] as channels makes it one sum.
"""
from __future__ import annotations

import torch

from fedicra.errors import UserError
from fedicra.losses.spanning_tree import SpanningForest, build_spanning_forest
from fedicra.losses.tree_passes_cpu import tree_passes_cpu
from fedicra.losses.tree_passes_gpu import tree_passes_torch, tree_passes_triton, triton_available

BACKENDS = ("auto", "numba", "triton", "torch")
_backend_override: str = "auto"


def set_backend(name: str) -> None:
    """Force the pass implementation ('auto': Numba on CPU, Triton (else torch) on GPUs)."""
    global _backend_override
    if name not in BACKENDS:
        raise UserError(f"tree filter backend must be one of {BACKENDS}, got {name!r}")
    _backend_override = name


def _run_passes(x: torch.Tensor, w: torch.Tensor, forest: SpanningForest):
    backend = _backend_override
    if backend == "auto":
        if x.device.type == "cpu":
            backend = "numba"
        else:
            backend = "triton" if triton_available() else "torch"
    if backend == "numba":
        return tree_passes_cpu(x, w, forest.parent, forest.order)
    if backend == "triton":
        return tree_passes_triton(x, w, forest)
    return tree_passes_torch(x, w, forest)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    batch, channels = x.shape[:2]
    return x.reshape(batch, channels, -1).transpose(1, 2)


class TreeFilterFunction(torch.autograd.Function):
    """Normalised tree filter of x [B,K,H,W] with edge affinities w [B,H*W] on a fixed forest."""

    @staticmethod
    def forward(ctx, x, w, forest: SpanningForest):
        batch, channels, height, width = x.shape
        ones = x.new_ones(batch, height * width, 1)
        signal = torch.cat([_channels_last(x), ones], dim=2).contiguous()
        up, full = _run_passes(signal, w.detach(), forest)
        up, full = up.to(x.device), full.to(x.device)
        y = full[..., :channels] / full[..., channels:]
        ctx.forest = forest
        ctx.save_for_backward(w, up, full, y)
        return y.transpose(1, 2).reshape(batch, channels, height, width)

    @staticmethod
    def backward(ctx, grad_y):
        w, up_x, full_x, y = ctx.saved_tensors
        forest = ctx.forest
        batch, channels, height, width = grad_y.shape
        z = _channels_last(grad_y) / full_x[..., channels:]
        need_w = ctx.needs_input_grad[1]
        if need_w:
            a = -(z * y).sum(dim=2, keepdim=True)
            z = torch.cat([z, a], dim=2)
        up_z, full_z = _run_passes(z.contiguous(), w.detach(), forest)
        up_z, full_z = up_z.to(grad_y.device), full_z.to(grad_y.device)
        grad_x = full_z[..., :channels].transpose(1, 2).reshape(batch, channels, height, width)
        grad_w = None
        if need_w:
            index = forest.parent.unsqueeze(2).expand(-1, -1, channels + 1)
            fx_parent = torch.gather(full_x, 1, index)
            fz_parent = torch.gather(full_z, 1, index)
            wc = w.detach().unsqueeze(2)
            grad_w = (up_z * (fx_parent - wc * up_x) + up_x * (fz_parent - wc * up_z)).sum(dim=2)
            grad_w[:, 0] = 0.0  # vertex 0 is the root: it has no edge
        if not ctx.needs_input_grad[0]:
            grad_x = None
        return grad_x, grad_w, None


def edge_affinities(guide: torch.Tensor, forest: SpanningForest, sigma: float) -> torch.Tensor:
    """w[b, v] = exp(-||G(v) - G(parent(v))||^2 / sigma), differentiable in the guide. [B, H*W]."""
    batch, channels = guide.shape[:2]
    g = guide.reshape(batch, channels, -1)
    g_parent = torch.gather(g, 2, forest.parent.unsqueeze(1).expand(-1, channels, -1))
    return torch.exp(-((g - g_parent) ** 2).sum(dim=1) / sigma)


def tree_filter(
    features: torch.Tensor,
    guide: torch.Tensor,
    sigma: float,
    learn_guide: bool,
    forest: SpanningForest | None = None,
) -> torch.Tensor:
    """Filter ``features`` [B,K,H,W] on the MST of ``guide`` [B,C,H,W] (same B, H, W).

    ``learn_guide=False`` blocks the gradient into the edge affinities (low-level tree).
    ``forest`` may be passed to reuse a tree already built from this guide.
    """
    if features.dim() != 4 or guide.dim() != 4:
        raise UserError("tree_filter: features and guide must be 4-D [B,C,H,W]")
    if features.shape[0] != guide.shape[0] or features.shape[2:] != guide.shape[2:]:
        raise UserError(
            f"tree_filter: features {tuple(features.shape)} and guide {tuple(guide.shape)} differ in batch or size"
        )
    if sigma <= 0:
        raise UserError(f"tree_filter: sigma must be positive, got {sigma}")
    # The filter always runs in (at least) fp32: bf16 path products over ~1,000 tree levels and
    # bf16 normalisers would be meaningless, and the CPU kernels take fp32/fp64 only.
    if features.dtype in (torch.float16, torch.bfloat16):
        features = features.float()
    if guide.dtype in (torch.float16, torch.bfloat16):
        guide = guide.float()
    if forest is None:
        forest = build_spanning_forest(guide)
    if not learn_guide:
        guide = guide.detach()
    with torch.autocast(device_type=features.device.type, enabled=False):
        w = edge_affinities(guide.to(features.dtype), forest, sigma)
        return TreeFilterFunction.apply(features, w, forest)
