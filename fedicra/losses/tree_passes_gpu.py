"""The two tree-filter passes for GPUs: a level-synchronous Triton kernel and a pure-torch fallback.

Both process the tree depth by depth (BFS levels: about 580 at 128 px and 1,080 at 256 px from a
corner root). Inside a level all vertices are independent, so they run in parallel; levels run in
sequence. The Triton kernel runs one program per image that walks all levels itself, with a block
barrier between levels, so a whole pass is ONE kernel launch (no per-level launch overhead). The
torch fallback (used when Triton is missing, e.g. on Windows) launches a few small kernels per level,
batched over the images. Both are deterministic: the up pass gathers from the children (at most
four, found from the direction bits) instead of scattering into the parent with atomics.

This module imports without CUDA or Triton; ``triton_available()`` says whether the kernel exists.
"""
from __future__ import annotations

import torch

from fedicra.losses.spanning_tree import SpanningForest

try:  # Triton ships with CUDA builds of torch; on CPU-only machines it is optional.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installation
    triton = None
    tl = None

BLOCK = 128  # vertices of one level handled together by a program


def triton_available() -> bool:
    return triton is not None


if triton is not None:

    @triton.jit
    def _up_kernel(
        up_ptr, w_ptr, children_ptr, order_ptr, level_start_ptr, num_levels_ptr,
        n, width, level_stride,
        K: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr,
    ):
        b = tl.program_id(0)
        base = b * n
        num_levels = tl.load(num_levels_ptr + b)
        ks = tl.arange(0, BLOCK_K)
        kmask = ks < K
        # Depths from the second deepest up to the root; the deepest level holds only leaves.
        for t in range(1, num_levels):
            depth = num_levels - 1 - t
            start = tl.load(level_start_ptr + b * level_stride + depth)
            end = tl.load(level_start_ptr + b * level_stride + depth + 1)
            for s in range(start, end, BLOCK_V):
                idx = s + tl.arange(0, BLOCK_V)
                m = idx < end
                v = tl.load(order_ptr + base + idx, mask=m, other=0)
                bits = tl.load(children_ptr + base + v, mask=m, other=0)
                mk = m[:, None] & kmask[None, :]
                acc = tl.load(up_ptr + (base + v)[:, None] * K + ks[None, :], mask=mk, other=0.0)
                for direction in tl.static_range(4):
                    # RIGHT=1 (+1), LEFT=2 (-1), DOWN=4 (+W), UP=8 (-W), as in spanning_tree.py
                    off = (direction == 0) * 1 - (direction == 1) * 1 \
                        + (direction == 2) * width - (direction == 3) * width
                    has = m & ((bits & (1 << direction)) != 0)
                    c = v + off
                    wc = tl.load(w_ptr + base + c, mask=has, other=0.0)
                    ac = tl.load(
                        up_ptr + (base + c)[:, None] * K + ks[None, :],
                        mask=has[:, None] & kmask[None, :], other=0.0, volatile=True,
                    )
                    acc += wc[:, None] * ac
                tl.store(up_ptr + (base + v)[:, None] * K + ks[None, :], acc, mask=mk)
            tl.debug_barrier()  # this level's results are read by the next one

    @triton.jit
    def _down_kernel(
        up_ptr, full_ptr, w_ptr, parent_ptr, order_ptr, level_start_ptr, num_levels_ptr,
        n, level_stride,
        K: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr,
    ):
        b = tl.program_id(0)
        base = b * n
        num_levels = tl.load(num_levels_ptr + b)
        ks = tl.arange(0, BLOCK_K)
        kmask = ks < K
        for depth in range(1, num_levels):
            start = tl.load(level_start_ptr + b * level_stride + depth)
            end = tl.load(level_start_ptr + b * level_stride + depth + 1)
            for s in range(start, end, BLOCK_V):
                idx = s + tl.arange(0, BLOCK_V)
                m = idx < end
                v = tl.load(order_ptr + base + idx, mask=m, other=0)
                p = tl.load(parent_ptr + base + v, mask=m, other=0)
                wv = tl.load(w_ptr + base + v, mask=m, other=0.0)
                mk = m[:, None] & kmask[None, :]
                av = tl.load(up_ptr + (base + v)[:, None] * K + ks[None, :], mask=mk, other=0.0)
                fp = tl.load(
                    full_ptr + (base + p)[:, None] * K + ks[None, :], mask=mk, other=0.0, volatile=True
                )
                fv = (1.0 - wv * wv)[:, None] * av + wv[:, None] * fp
                tl.store(full_ptr + (base + v)[:, None] * K + ks[None, :], fv, mask=mk)
            tl.debug_barrier()


def tree_passes_triton(x: torch.Tensor, w: torch.Tensor, forest: SpanningForest):
    """Same contract as ``tree_passes_cpu``: x [B,n,K], w [B,n] -> (A, F)."""
    if triton is None:
        raise RuntimeError("the Triton tree-filter kernel needs the 'triton' package")
    batch, n, channels = x.shape
    x = x.contiguous()
    w = w.to(x.dtype).contiguous()
    up = x.clone()
    block_k = triton.next_power_of_2(channels)
    level_start = forest.level_start.contiguous()
    # num_stages=1: no software pipelining, so no load is hoisted above a level barrier
    common = dict(K=channels, BLOCK_K=block_k, BLOCK_V=BLOCK, num_warps=4, num_stages=1)
    _up_kernel[(batch,)](
        up, w, forest.children, forest.order, level_start, forest.num_levels,
        n, forest.width, level_start.shape[1], **common,
    )
    full = up.clone()  # only the root's entry survives: it equals A(root)
    _down_kernel[(batch,)](
        up, full, w, forest.parent, forest.order, level_start, forest.num_levels,
        n, level_start.shape[1], **common,
    )
    return up, full


def _levels_flat(forest: SpanningForest) -> list[torch.Tensor]:
    """Flat vertex ids (b * n + v) of each depth, over the whole batch."""
    batch, n = forest.order.shape
    device = forest.order.device
    positions = torch.arange(n, device=device).expand(batch, n)
    depth = torch.searchsorted(forest.level_start, positions.contiguous(), right=True) - 1
    flat = forest.order + torch.arange(batch, device=device)[:, None] * n
    depth, flat = depth.reshape(-1), flat.reshape(-1)
    key = torch.argsort(depth, stable=True)
    counts = torch.bincount(depth).tolist()
    return list(torch.split(flat[key], counts))


def tree_passes_torch(x: torch.Tensor, w: torch.Tensor, forest: SpanningForest):
    """Reference level-synchronous passes in plain torch (any device; slow: ~6 launches a level)."""
    batch, n, channels = x.shape
    width = forest.width
    levels = _levels_flat(forest)
    xf = x.reshape(batch * n, channels)
    wf = w.to(x.dtype).reshape(batch * n)
    bits = forest.children.reshape(batch * n)
    parent = (forest.parent + torch.arange(batch, device=x.device)[:, None] * n).reshape(-1)
    up = xf.clone()
    offsets = ((1, 1), (2, -1), (4, width), (8, -width))
    for ids in reversed(levels[:-1]):
        acc = up[ids]
        for bit, off in offsets:
            has = (bits[ids] & bit) != 0
            c = torch.where(has, ids + off, ids)
            acc = acc + torch.where(has, wf[c], 0.0)[:, None] * up[c]
        up[ids] = acc
    full = up.clone()
    for ids in levels[1:]:
        wv = wf[ids][:, None]
        full[ids] = (1.0 - wv * wv) * up[ids] + wv * full[parent[ids]]
    return up.reshape(batch, n, channels), full.reshape(batch, n, channels)
