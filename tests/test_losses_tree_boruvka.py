"""Batched torch Boruvka (the GPU tree builder), run on the CPU: same trees as the Numba Kruskal,
minimum weight against scipy with ties, and an unchanged tree filter (values and gradients)."""
import numpy as np
import pytest
import scipy.sparse
import torch
from scipy.sparse.csgraph import minimum_spanning_tree

from fedicra.losses import build_spanning_forest, tree_filter
from fedicra.losses.spanning_tree_torch import boruvka_tree_edges, grid_edge_keys
from fedicra.losses.tree_filter import set_backend

FIELDS = ("parent", "children", "level_start", "num_levels")


def _guide(shape, kind, seed=0):
    g = torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if kind == "ties":          # few distinct values: most edge weights are equal
        g = (g * 2).round() / 2
    elif kind == "flat":        # every weight is 0: the tree is decided by the tie-break alone
        g = torch.zeros_like(g)
    return g


@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (3, 1, 1, 6), (2, 2, 5, 1), (1, 1, 1, 1), (2, 3, 24, 31)])
@pytest.mark.parametrize("kind", ["random", "ties", "flat"])
def test_boruvka_builds_the_kruskal_trees(shape, kind):
    guide = _guide(shape, kind)
    kruskal = build_spanning_forest(guide, builder="kruskal")
    boruvka = build_spanning_forest(guide, builder="boruvka")
    for name in FIELDS:
        assert torch.equal(getattr(kruskal, name), getattr(boruvka, name)), name
    # the BFS order differs only inside a level: same depth sequence, vertices sorted per level
    batch, n = boruvka.order.shape
    for b in range(batch):
        order = boruvka.order[b]
        assert sorted(order.tolist()) == list(range(n)) and order[0] == 0
        for d in range(int(boruvka.num_levels[b])):
            start, end = boruvka.level_start[b, d], boruvka.level_start[b, d + 1]
            level = order[start:end]
            assert torch.equal(level, level.sort().values)
            assert set(level.tolist()) == set(kruskal.order[b, start:end].tolist())


def _scipy_mst_weight(guide):
    """scipy's MST weight of the grid with weights ||dG||^2 + 1 (scipy drops zero weights)."""
    tail, head, _, key = grid_edge_keys(guide[None])
    weight = (key >> 32).to(torch.int32).view(torch.float32).double() + 1.0
    n = guide.shape[1] * guide.shape[2]
    graph = scipy.sparse.coo_matrix((weight.numpy(), (tail.numpy(), head.numpy())), shape=(n, n)).tocsr()
    return minimum_spanning_tree(graph).sum(), weight


@pytest.mark.parametrize("kind", ["random", "ties", "flat"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_boruvka_tree_weight_equals_scipy(kind, seed):
    guide = _guide((3, 13, 17), kind, seed)
    expected, weight = _scipy_mst_weight(guide)
    tail, head, _, key = grid_edge_keys(guide[None])
    picked = boruvka_tree_edges(tail, head, key, 13 * 17)
    assert picked.numel() == 13 * 17 - 1 and picked.unique().numel() == picked.numel()
    assert float(weight[picked].sum()) == pytest.approx(expected, rel=1e-12)
    # the rooted forest holds exactly these edges
    forest = build_spanning_forest(guide[None], builder="boruvka")
    parent = forest.parent[0]
    edges = {(min(v, int(p)), max(v, int(p))) for v, p in enumerate(parent.tolist()) if v != 0}
    assert edges == {(int(tail[i]), int(head[i])) for i in picked}


def _filter_and_grads(x, guide, forest, backend):
    x = x.clone().requires_grad_()
    guide = guide.clone().requires_grad_()
    set_backend(backend)
    try:
        y = tree_filter(x, guide, 0.7, learn_guide=True, forest=forest)
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)).sum().backward()
    finally:
        set_backend("auto")
    return y.detach(), x.grad, guide.grad


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_filter_values_and_gradients_are_unchanged_on_boruvka_trees(backend):
    x = torch.randn(3, 2, 11, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    guide = _guide((3, 3, 11, 9), "ties", seed=5) + 0.01 * _guide((3, 3, 11, 9), "random", seed=6)
    reference = _filter_and_grads(x, guide, build_spanning_forest(guide, builder="kruskal"), "numba")
    other = _filter_and_grads(x, guide, build_spanning_forest(guide, builder="boruvka"), backend)
    for a, b in zip(reference, other):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


def test_unknown_builder_is_rejected():
    with pytest.raises(ValueError, match="builder"):
        build_spanning_forest(torch.rand(1, 1, 3, 3), builder="prim")


def test_bf16_inputs_are_filtered_in_fp32():
    x = torch.rand(1, 2, 6, 6).to(torch.bfloat16)
    guide = torch.rand(1, 3, 6, 6)
    out = tree_filter(x, guide.to(torch.bfloat16), 0.5, learn_guide=False)
    assert out.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = tree_filter(x.float(), guide, 0.5, learn_guide=False)
    assert inside.dtype == torch.float32
    np.testing.assert_allclose(inside.numpy(), tree_filter(x.float(), guide, 0.5, learn_guide=False).numpy())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_boruvka_builds_the_cpu_trees():
    guide = _guide((6, 3, 96, 80), "random", seed=7).float()
    cpu = build_spanning_forest(guide, builder="kruskal")
    gpu = build_spanning_forest(guide.cuda())  # auto: Boruvka on the device
    for name in FIELDS:
        assert torch.equal(getattr(cpu, name), getattr(gpu, name).cpu()), name
