"""The two tree-filter passes on the CPU (Numba), and the per-image thread pool of the CPU path.

For every image b and channel k, with w[v] the affinity of the edge v -> parent[v]:
  up pass (leaves -> root):   A(v) = X(v) + sum_{children c of v} w[c] A(c)
  down pass (root -> leaves): F(root) = A(root);  F(v) = (1 - w[v]^2) A(v) + w[v] F(parent[v])
so that F(v) = sum_u S(v, u) X(u) with S the product of affinities along the tree path.
Arrays are channel-last ([n, K]) so one vertex's channels share a cache line.

Images run in parallel on Python threads: the kernels release the GIL (``nogil``), which avoids
Numba's parallel threading layers (their start-up cost dominates tiny inputs, the OpenMP layer is
not fork-safe and the workqueue layer is not thread-safe). The pool size follows
``torch.get_num_threads()``, so one knob sets the CPU budget.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch

_pool: ThreadPoolExecutor | None = None


def for_each_image(func, batch: int) -> list:
    """[func(b) for b in range(batch)], on up to torch.get_num_threads() threads."""
    global _pool
    threads = min(torch.get_num_threads(), batch)
    if threads <= 1:
        return [func(b) for b in range(batch)]
    if _pool is None or _pool._max_workers < threads:
        _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fedicra-tree")
    return list(_pool.map(func, range(batch)))


@numba.njit(cache=True, nogil=True)
def _passes(x, w, parent, order, up, full):
    n, channels = x.shape
    for v in range(n):
        for k in range(channels):
            up[v, k] = x[v, k]
    for i in range(n - 1, 0, -1):
        v = order[i]
        p = parent[v]
        wv = w[v]
        for k in range(channels):
            up[p, k] += wv * up[v, k]
    root = order[0]
    for k in range(channels):
        full[root, k] = up[root, k]
    for i in range(1, n):
        v = order[i]
        p = parent[v]
        wv = w[v]
        keep = 1.0 - wv * wv
        for k in range(channels):
            full[v, k] = keep * up[v, k] + wv * full[p, k]


def tree_passes_cpu(x: torch.Tensor, w: torch.Tensor, parent: torch.Tensor, order: torch.Tensor):
    """x [B,n,K], w [B,n] (same float dtype), parent/order [B,n] int64 -> (A, F), each [B,n,K]."""
    xn = np.ascontiguousarray(x.detach().numpy())
    wn = np.ascontiguousarray(w.detach().to(x.dtype).numpy())
    pn, on = parent.numpy(), order.numpy()
    up = np.empty_like(xn)
    full = np.empty_like(xn)
    for_each_image(lambda b: _passes(xn[b], wn[b], pn[b], on[b], up[b], full[b]), xn.shape[0])
    return torch.from_numpy(up), torch.from_numpy(full)
