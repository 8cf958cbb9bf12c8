"""Minimum spanning trees of 4-connected pixel grids in batched torch ops, on any device.

The GPU path of the tree filter builds its trees where the guide lives (upstream's CUDA extension
does the same), so nothing is copied to the host. Everything below is whole-batch tensor ops; the
only Python loops run over rounds whose number is logarithmic in the number of pixels:

1. Boruvka: every component picks its lightest outgoing edge (a scatter-min over the live edges),
   the picked edges join the tree and the components they connect merge (hooking plus pointer
   jumping). Edges are ordered by the key (float32 bits of the weight, edge id), the very key of
   the CPU Kruskal in ``spanning_tree.py``: all keys differ, so the minimum spanning tree is unique
   and both builders return the same tree, ties included. At most log2(n) rounds.
2. Rooting at pixel 0: an Euler tour of the tree (each directed edge is followed by the next tree
   edge around its head, in the fixed direction order RIGHT, LEFT, DOWN, UP) ranked by pointer
   jumping; an edge traversed before its reverse points from parent to child.
3. Depths by pointer jumping on the parent array; BFS order = vertices sorted by (depth, index).
"""
from __future__ import annotations

import math

import torch

from fedicra.losses.spanning_tree import DOWN, LEFT, RIGHT, UP, SpanningForest

_BITS = (RIGHT, LEFT, DOWN, UP)   # direction d has bit 1 << d
_REVERSE = (1, 0, 3, 2)           # RIGHT <-> LEFT, DOWN <-> UP


def _next_direction_table() -> torch.Tensor:
    """NEXT[mask, d]: the first direction after d (cyclically) whose bit is set in mask."""
    table = torch.zeros(16, 4, dtype=torch.int64)
    for mask in range(1, 16):
        for d in range(4):
            table[mask, d] = next(e % 4 for e in range(d + 1, d + 5) if mask >> (e % 4) & 1)
    return table


_NEXT = _next_direction_table()


def grid_edge_keys(guide: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The grid edges of every image: (tail, head, direction, key), flat over the batch.

    tail/head are flat vertex ids b * n + v, direction is RIGHT's or DOWN's index (0 or 2), key the
    int64 sort key (float32 bits of ||G(tail) - G(head)||^2 above the in-image edge id 2v or 2v+1),
    computed exactly as the CPU builder does (float64 sums in channel order, NaN and overflow to the
    largest float32).
    """
    batch, channels, height, width = guide.shape
    n = height * width
    g = guide.detach().to(torch.float64)
    device = guide.device
    vertex = torch.arange(n, device=device).reshape(height, width)
    base = (torch.arange(batch, device=device) * n).reshape(batch, 1)
    tails, heads, directions, keys = [], [], [], []
    for axis, direction, step in ((3, 0, 1), (2, 2, width)):
        size = g.shape[axis]
        diff = g.narrow(axis, 1, size - 1) - g.narrow(axis, 0, size - 1)
        weight = torch.zeros(diff.shape[:1] + diff.shape[2:], dtype=torch.float64, device=device)
        for k in range(channels):  # channel order as in the CPU kernel: identical float64 sums
            weight = weight + diff[:, k] * diff[:, k]
        weight = torch.where(torch.isnan(weight), math.inf, weight).clamp(max=torch.finfo(torch.float32).max)
        bits = weight.to(torch.float32).view(torch.int32).to(torch.int64).reshape(batch, -1)
        tail = vertex.narrow(axis - 2, 0, size - 1).reshape(1, -1)
        edge_id = 2 * tail + (direction == 2)
        tails.append((tail + base).reshape(-1))
        heads.append((tail + step + base).reshape(-1))
        directions.append(torch.full_like(tails[-1], direction))
        keys.append(((bits << 32) | edge_id).reshape(-1))
    return torch.cat(tails), torch.cat(heads), torch.cat(directions), torch.cat(keys)


def _jump_to_roots(hook: torch.Tensor) -> torch.Tensor:
    """Pointer jumping: every entry ends at the root of its hook tree (log2(depth) rounds)."""
    while True:
        jumped = hook[hook]
        if torch.equal(jumped, hook):
            return hook
        hook = jumped


def boruvka_tree_edges(tail, head, key, num_vertices: int) -> torch.Tensor:
    """Indices of the edges of the minimum spanning forest (keys must be unique per component)."""
    ids = torch.arange(num_vertices, device=tail.device)
    component = ids.clone()
    edge = torch.arange(tail.numel(), device=tail.device)
    chosen = []
    none = torch.iinfo(torch.int64).max
    while True:
        cu, cv = component[tail], component[head]
        live = cu != cv
        if not bool(live.any()):
            break
        tail, head, key, edge, cu, cv = (t[live] for t in (tail, head, key, edge, cu, cv))
        best = torch.full((num_vertices,), none, dtype=torch.int64, device=tail.device)
        best.scatter_reduce_(0, cu, key, "amin")
        best.scatter_reduce_(0, cv, key, "amin")
        pick_u, pick_v = key == best[cu], key == best[cv]
        chosen.append(edge[pick_u | pick_v])
        # Each component hooks onto the one across its lightest edge (one edge per component, so
        # the writes never collide); two components that picked the same edge form a 2-cycle,
        # which the smaller id breaks by becoming the root.
        hook = ids.clone()
        hook[cu[pick_u]] = cv[pick_u]
        hook[cv[pick_v]] = cu[pick_v]
        hook = torch.where((hook[hook] == ids) & (ids < hook), ids, hook)
        component = _jump_to_roots(hook)[component]
    return torch.cat(chosen) if chosen else edge[:0]


def _pointer_jump_sum(value: torch.Tensor, successor: torch.Tensor, rounds: int) -> torch.Tensor:
    """Sum of `value` along each successor chain (chains end in a self-loop whose value is 0)."""
    for _ in range(rounds):
        value = value + value[successor]
        successor = successor[successor]
    return value


def build_spanning_forest_torch(guide: torch.Tensor) -> SpanningForest:
    """Same contract (and, with its tie-break, the same trees) as the CPU ``build_spanning_forest``."""
    batch, _, height, width = guide.shape
    n = height * width
    device = guide.device
    total = batch * n
    tail, head, direction, key = grid_edge_keys(guide)
    picked = boruvka_tree_edges(tail, head, key, total)
    if picked.numel() != batch * (n - 1):  # cannot happen on a connected grid; guards the code
        raise RuntimeError("spanning tree construction did not connect the grid")
    tail, head, direction = tail[picked], head[picked], direction[picked]

    # Directed edge slots 4 * vertex + d; a slot exists where the tree has an edge in direction d.
    reverse = torch.tensor(_REVERSE, device=device)
    slot_tail = torch.cat([tail, head])
    slot_dir = torch.cat([direction, reverse[direction]])
    slot_head = torch.cat([head, tail])
    bits = torch.tensor(_BITS, device=device)
    exists = torch.zeros(4 * total, dtype=torch.bool, device=device)
    exists[4 * slot_tail + slot_dir] = True
    neighbours = (exists.reshape(total, 4) * bits).sum(1)  # direction bits of each vertex's tree edges

    # Euler tour: after u -> v comes v -> (v's next tree neighbour after u). Cut it where it
    # returns to the root's first edge, so it is a list that starts at pixel 0.
    table = _NEXT.to(device)
    successor = torch.arange(4 * total, device=device)
    successor[4 * slot_tail + slot_dir] = 4 * slot_head + table[neighbours[slot_head], reverse[slot_dir]]
    roots = torch.arange(batch, device=device) * n
    if n > 1:
        is_first = torch.zeros(4 * total, dtype=torch.bool, device=device)
        is_first[4 * roots + table[neighbours[roots], 3]] = True  # lowest set direction of the root
        last = (exists & is_first[successor]).nonzero().squeeze(1)
        successor[last] = last
    rounds = max(1, math.ceil(math.log2(2 * n)))
    to_end = _pointer_jump_sum((successor != torch.arange(4 * total, device=device)).long(), successor, rounds)

    # An edge walked before its reverse (farther from the end of the tour) goes parent -> child.
    forward = 4 * slot_tail + slot_dir
    backward = 4 * slot_head + reverse[slot_dir]
    down = to_end[forward] > to_end[backward]
    parent = torch.arange(total, device=device)
    parent[slot_head[down]] = slot_tail[down]
    is_down = torch.zeros(4 * total, dtype=torch.bool, device=device)
    is_down[forward[down]] = True
    children = (is_down.reshape(total, 4) * bits).sum(1)

    depth = _pointer_jump_sum((parent != torch.arange(total, device=device)).long(), parent,
                              max(1, math.ceil(math.log2(n))))
    depth = depth.reshape(batch, n)
    sorted_depth, order = torch.sort(depth, dim=1, stable=True)
    num_levels = sorted_depth[:, -1] + 1
    levels = torch.arange(int(num_levels.max()) + 1, device=device).expand(batch, -1).contiguous()
    level_start = torch.searchsorted(sorted_depth.contiguous(), levels)
    return SpanningForest(
        height=height,
        width=width,
        parent=parent.reshape(batch, n) - roots.reshape(batch, 1),
        order=order,
        children=children.reshape(batch, n).to(torch.int32),
        level_start=level_start,
        num_levels=num_levels,
    )
