"""Tree filter: spanning tree validity, brute-force path products, exact gradients, backends."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import torch
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

from fedicra.errors import UserError
from fedicra.losses import build_spanning_forest, tree_filter
from fedicra.losses.tree_filter import edge_affinities, set_backend
from fedicra.losses.tree_passes_gpu import triton_available

REPO = Path(__file__).resolve().parents[1]


def _grid_graph(guide, plus=1.0):
    """Scipy sparse 4-connected grid with weights ||dG||^2 + plus (scipy drops zero weights)."""
    channels, height, width = guide.shape
    g = guide.reshape(channels, -1)
    rows, cols, vals = [], [], []
    for v in range(height * width):
        r, c = divmod(v, width)
        for u in ([v + 1] if c + 1 < width else []) + ([v + width] if r + 1 < height else []):
            rows.append(v)
            cols.append(u)
            vals.append(float(((g[:, v] - g[:, u]) ** 2).sum()) + plus)
    n = height * width
    return scipy.sparse.coo_matrix((vals, (rows, cols)), shape=(n, n)).tocsr()


def _tree_edges(forest, b):
    parent = forest.parent[b].numpy()
    return {(min(v, p), max(v, p)) for v, p in enumerate(parent) if v != 0}


def _assert_spanning_tree(forest, b, width):
    n = forest.num_vertices
    edges = _tree_edges(forest, b)
    assert len(edges) == n - 1
    for u, v in edges:  # every tree edge is a grid edge
        assert v - u == 1 and u // width == v // width or v - u == width
    adjacency = scipy.sparse.coo_matrix((np.ones(n - 1), tuple(np.array(sorted(edges)).T)), shape=(n, n))
    assert connected_components(adjacency, directed=False)[0] == 1
    return edges


@pytest.mark.parametrize("builder", ["kruskal", "boruvka"])
def test_forest_survives_nan_and_huge_guides(builder):
    guide = torch.rand(1, 2, 5, 4)
    guide[0, 0, 1, 3] = float("nan")
    guide[0, 1, 2:, 1] = 1e30  # squared differences overflow float32
    forest = build_spanning_forest(guide, builder=builder)
    _assert_spanning_tree(forest, 0, 4)
    assert sorted(forest.order[0].tolist()) == list(range(20))


@pytest.mark.parametrize("builder", ["kruskal", "boruvka"])
@pytest.mark.parametrize("quantised", [False, True])
def test_forest_is_a_minimum_spanning_tree(quantised, builder):
    torch.manual_seed(1)
    guide = torch.rand(2, 3, 7, 9, dtype=torch.float64)
    if quantised:  # many equal weights: ties must still give a spanning tree of minimum weight
        guide = (guide * 2).round() / 2
    forest = build_spanning_forest(guide, builder=builder)
    height, width, n = 7, 9, 63
    for b in range(2):
        order = forest.order[b].numpy()
        parent = forest.parent[b].numpy()
        assert order[0] == 0 and sorted(order.tolist()) == list(range(n))
        edges = _assert_spanning_tree(forest, b, width)
        # parents come before children in the BFS order
        position = np.empty(n, dtype=int)
        position[order] = np.arange(n)
        assert all(position[parent[v]] < position[v] for v in range(1, n))
        # same total weight as scipy's MST (weights +1 so that zero differences are kept)
        graph = _grid_graph(guide[b].numpy())
        ours = sum(graph[u, v] for u, v in edges)
        assert ours == pytest.approx(minimum_spanning_tree(graph).sum(), rel=1e-6)
        # level bookkeeping: level d holds the vertices of depth d
        starts = forest.level_start[b].numpy()
        levels = int(forest.num_levels[b])
        assert starts[0] == 0 and starts[levels] == n
        depth = np.zeros(n, dtype=int)
        for v in order[1:]:
            depth[v] = depth[parent[v]] + 1
        for d in range(levels):
            assert (depth[order[starts[d] : starts[d + 1]]] == d).all()
    # children bits match the parent array
    kids = forest.children[0].numpy()
    parent = forest.parent[0].numpy()
    for v in range(n):
        expected = 0
        for bit, u in ((1, v + 1), (2, v - 1), (4, v + width), (8, v - width)):
            if 0 <= u < n and u != 0 and parent[u] == v and abs(u % width - v % width) <= 1:
                expected |= bit
        assert kids[v] == expected


def _brute_force_filter(x, guide, sigma):
    """Explicit sum over all pixel pairs of the product of affinities along the MST path."""
    forest = build_spanning_forest(guide)
    w = edge_affinities(guide, forest, sigma)[0].numpy()
    parent = forest.parent[0].numpy()
    n = parent.shape[0]

    def ancestors(v):
        path = [v]
        while v != 0:
            v = parent[v]
            path.append(v)
        return path

    s = np.zeros((n, n))
    for u in range(n):
        up = ancestors(u)
        for v in range(n):
            vp = ancestors(v)
            common = set(up) & set(vp)
            product = 1.0
            for a in up + vp:  # edges below the lowest common ancestor, on either side
                if a not in common:
                    product *= w[a]
            s[u, v] = product
    channels = x.shape[1]
    xs = x[0].reshape(channels, n).numpy()
    return ((s @ xs.T) / s.sum(axis=1, keepdims=True)).T.reshape(x.shape)


def test_filter_matches_brute_force_path_products():
    torch.manual_seed(2)
    guide = torch.rand(1, 3, 5, 6, dtype=torch.float64)
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64)
    for sigma in (0.3, 2.0):
        expected = _brute_force_filter(x, guide, sigma)
        got = tree_filter(x, guide, sigma, learn_guide=True).detach().numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_constant_guide_gives_the_image_mean_and_edges_separate_regions():
    x = torch.rand(2, 3, 6, 8, dtype=torch.float64)
    flat = tree_filter(x, torch.zeros(2, 1, 6, 8, dtype=torch.float64), 0.02, learn_guide=False)
    torch.testing.assert_close(flat, x.mean(dim=(2, 3), keepdim=True).expand_as(x))
    guide = torch.zeros(2, 1, 6, 8, dtype=torch.float64)
    guide[..., 4:] = 1.0  # a sharp vertical edge: exp(-1/0.02) ~ 2e-22 across it
    out = tree_filter(x, guide, 0.02, learn_guide=False)
    torch.testing.assert_close(out[..., :4], x[..., :4].mean(dim=(2, 3), keepdim=True).expand(2, 3, 6, 4))
    torch.testing.assert_close(out[..., 4:], x[..., 4:].mean(dim=(2, 3), keepdim=True).expand(2, 3, 6, 4))


def test_gradcheck_features_and_guide():
    torch.manual_seed(3)
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    guide = (0.5 * torch.rand(2, 3, 5, 6, dtype=torch.float64)).requires_grad_()
    forest = build_spanning_forest(guide)
    assert torch.autograd.gradcheck(
        lambda a, g: tree_filter(a, g, 0.4, learn_guide=True, forest=forest), (x, guide)
    )
    # rebuilding the tree inside: the tree is locally constant, so the check still holds
    x1, g1 = x[:1, :, :4, :5].detach().requires_grad_(), guide[:1, :, :4, :5].detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, g: tree_filter(a, g, 1.0, learn_guide=True), (x1, g1))


def test_learn_guide_false_blocks_guide_gradient():
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    guide = torch.rand(1, 3, 4, 4, requires_grad=True)
    tree_filter(x, guide, 0.5, learn_guide=False).square().sum().backward()
    assert guide.grad is None
    assert x.grad is not None and x.grad.abs().sum() > 0


def _filter_with_grads(x, guide):
    x = x.clone().requires_grad_()
    guide = guide.clone().requires_grad_()
    y = tree_filter(x, guide, 0.7, learn_guide=True)
    (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)).sum().backward()
    return y.detach(), x.grad, guide.grad


def test_torch_level_backend_matches_numba():
    torch.manual_seed(4)
    x = torch.randn(3, 2, 9, 7, dtype=torch.float64)
    guide = torch.rand(3, 3, 9, 7, dtype=torch.float64)
    reference = _filter_with_grads(x, guide)
    try:
        set_backend("torch")
        other = _filter_with_grads(x, guide)
    finally:
        set_backend("auto")
    for a, b in zip(reference, other):
        torch.testing.assert_close(a, b)
    with pytest.raises(UserError, match="backend"):
        set_backend("cuda")
    x = torch.rand(1, 1, 4, 4)
    with pytest.raises(UserError, match="sigma"):
        tree_filter(x, x, 0.0, learn_guide=False)
    with pytest.raises(UserError, match="differ"):
        tree_filter(x, torch.rand(1, 1, 4, 5), 1.0, learn_guide=False)


_TRITON_SCRIPT = textwrap.dedent(
    """
    import torch
    from fedicra.losses.spanning_tree import build_spanning_forest
    from fedicra.losses.tree_passes_cpu import tree_passes_cpu
    from fedicra.losses.tree_passes_gpu import tree_passes_triton
    torch.manual_seed(0)
    forest = build_spanning_forest(torch.rand(2, 3, 11, 9))
    x, w = torch.randn(2, 99, 3), torch.rand(2, 99)
    for got, want in zip(tree_passes_triton(x, w, forest), tree_passes_cpu(x, w, forest.parent, forest.order)):
        torch.testing.assert_close(got, want)
    print("ok")
    """
)


@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
def test_triton_kernel_in_interpreter_matches_numba():
    env = dict(os.environ, TRITON_INTERPRET="1")
    done = subprocess.run(
        [sys.executable, "-c", _TRITON_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_path_matches_cpu():
    torch.manual_seed(5)
    x = torch.randn(4, 3, 48, 40)
    guide = torch.rand(4, 3, 48, 40)
    cpu = _filter_with_grads(x, guide)
    gpu = _filter_with_grads(x.cuda(), guide.cuda())
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5)
