"""Multiscale tree energy loss: known values on flat guides, modes, gradient routing."""
import pytest
import torch

from fedicra.errors import UserError
from fedicra.losses import tree_energy_loss, tree_filter

IGNORE = 2


def _inputs(seed=0, size=(6, 7), batch=2):
    torch.manual_seed(seed)
    logits = torch.randn(batch, 2, *size, dtype=torch.float64, requires_grad=True)
    image = torch.rand(batch, 1, *size, dtype=torch.float64)
    h, w = size
    aux = [
        torch.randn(batch, 2, h // 2, w // 2, dtype=torch.float64, requires_grad=True),
        torch.randn(batch, 2, h, w, dtype=torch.float64, requires_grad=True),
        torch.randn(batch, 2, h, w, dtype=torch.float64, requires_grad=True),
    ]
    labels = torch.full((batch, *size), IGNORE)
    labels[:, 0, :3] = 0
    labels[:, -1, -2:] = 1
    return logits, image, aux, labels


def test_flat_guides_give_the_distance_to_the_image_mean():
    logits, _, _, labels = _inputs()
    flat_image = torch.zeros(2, 1, 6, 7, dtype=torch.float64)
    flat_aux = [torch.zeros(2, 2, 3, 3, dtype=torch.float64) for _ in range(3)]
    probs = torch.softmax(logits, 1)
    unlabelled = (labels == IGNORE).unsqueeze(1)
    expected = 0.1 * ((probs - probs.mean(dim=(2, 3), keepdim=True)).abs() * unlabelled).sum() / unlabelled.sum()
    for mode, factor in (("recursive", 1), ("single", 1), ("add", 3)):
        got = tree_energy_loss(logits, flat_image, flat_aux, labels, IGNORE, mode=mode)
        assert got.item() == pytest.approx(factor * expected.item(), rel=1e-10)


def test_recursive_cascade_matches_explicit_filters():
    logits, image, aux, labels = _inputs(1)
    probs = torch.softmax(logits, 1)
    target = tree_filter(probs, image.repeat(1, 3, 1, 1), 0.02, learn_guide=False)
    for a in aux:
        guide = torch.nn.functional.interpolate(a, size=(6, 7), mode="bilinear", align_corners=False)
        target = tree_filter(target, guide, 1.0, learn_guide=True)
    unlabelled = (labels == IGNORE).unsqueeze(1)
    expected = 0.5 * ((probs - target).abs() * unlabelled).sum() / unlabelled.sum()
    got = tree_energy_loss(logits, image, aux, labels, IGNORE, weight=0.5)
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    # a 3-channel image is used as is; a grey image is repeated to 3 channels
    same = tree_energy_loss(logits, image.repeat(1, 3, 1, 1), aux, labels, IGNORE, weight=0.5)
    assert same.item() == pytest.approx(got.item(), rel=1e-12)


def test_gradients_reach_logits_and_aux_heads_but_not_the_image():
    logits, image, aux, labels = _inputs(2)
    image.requires_grad_()
    tree_energy_loss(logits, image, aux, labels, IGNORE).backward()
    assert image.grad is None
    assert logits.grad.abs().sum() > 0
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in aux)


def test_single_mode_uses_only_the_first_aux_guide():
    logits, image, aux, labels = _inputs(3)
    first = tree_energy_loss(logits, image, aux, labels, IGNORE, mode="single")
    changed = [aux[0], aux[1] * 5 + 1, aux[2] * -3]
    second = tree_energy_loss(logits, image, changed, labels, IGNORE, mode="single")
    assert first.item() == pytest.approx(second.item(), rel=1e-12)
    first.backward()
    assert aux[0].grad is not None and aux[1].grad is None and aux[2].grad is None
    recursive = tree_energy_loss(logits, image, changed, labels, IGNORE, mode="recursive")
    assert recursive.item() != pytest.approx(first.item(), rel=1e-6)


def test_fully_labelled_batch_gives_zero_with_gradient():
    logits, image, aux, _ = _inputs(4)
    labels = torch.zeros(2, 6, 7, dtype=torch.long)
    loss = tree_energy_loss(logits, image, aux, labels, IGNORE)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(logits.grad == 0)


def test_bad_inputs_are_user_errors():
    logits, image, aux, labels = _inputs(5)
    with pytest.raises(UserError, match="mode"):
        tree_energy_loss(logits, image, aux, labels, IGNORE, mode="sum")
    with pytest.raises(UserError, match="auxiliary"):
        tree_energy_loss(logits, image, [], labels, IGNORE)
    with pytest.raises(UserError, match="labels shape"):
        tree_energy_loss(logits, image, aux, labels[:, :3], IGNORE)
