"""The two tree-filter passes on the CPU (Numba, parallel over the batch).

For every image b and channel k, with w[v] the affinity of the edge v -> parent[v]:
  up pass (leaves -> root):   A(v) = X(v) + sum_{children c of v} w[c] A(c)
  down pass (root -> leaves): F(root) = A(root);  F(v) = (1 - w[v]^2) A(v) + w[v] F(parent[v])
so that F(v) = sum_u S(v, u) X(u) with S the product of affinities along the tree path.
Arrays are channel-last ([B, n, K]) so one vertex's channels share a cache line.
"""
from __future__ import annotations

import numba
import numpy as np
import torch


def numba_threads_like_torch() -> None:
    """Let torch.set_num_threads also bound the Numba kernels (one knob for the CPU budget)."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


@numba.njit(cache=True, parallel=True)
def _passes(x, w, parent, order, up, full):
    batch, n, channels = x.shape
    for b in numba.prange(batch):
        for v in range(n):
            for k in range(channels):
                up[b, v, k] = x[b, v, k]
        for i in range(n - 1, 0, -1):
            v = order[b, i]
            p = parent[b, v]
            wv = w[b, v]
            for k in range(channels):
                up[b, p, k] += wv * up[b, v, k]
        root = order[b, 0]
        for k in range(channels):
            full[b, root, k] = up[b, root, k]
        for i in range(1, n):
            v = order[b, i]
            p = parent[b, v]
            wv = w[b, v]
            keep = 1.0 - wv * wv
            for k in range(channels):
                full[b, v, k] = keep * up[b, v, k] + wv * full[b, p, k]


def tree_passes_cpu(x: torch.Tensor, w: torch.Tensor, parent: torch.Tensor, order: torch.Tensor):
    """x [B,n,K], w [B,n] (same float dtype), parent/order [B,n] int64 -> (A, F), each [B,n,K]."""
    xn = np.ascontiguousarray(x.detach().numpy())
    wn = np.ascontiguousarray(w.detach().to(x.dtype).numpy())
    up = np.empty_like(xn)
    full = np.empty_like(xn)
    numba_threads_like_torch()
    _passes(xn, wn, parent.numpy(), order.numpy(), up, full)
    return torch.from_numpy(up), torch.from_numpy(full)
