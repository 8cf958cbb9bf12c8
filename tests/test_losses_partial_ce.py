"""Partial cross-entropy over labelled pixels only."""
import pytest
import torch
import torch.nn.functional as F

from fedicra.errors import UserError
from fedicra.losses import partial_cross_entropy


def test_mean_over_labelled_pixels_only():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5)
    labels = torch.full((2, 4, 5), 3)
    labels[0, 1, 2], labels[1, 3, 4], labels[1, 0, 0] = 0, 2, 1
    want = torch.stack(
        [
            F.cross_entropy(logits[0, :, 1, 2][None], torch.tensor([0])),
            F.cross_entropy(logits[1, :, 3, 4][None], torch.tensor([2])),
            F.cross_entropy(logits[1, :, 0, 0][None], torch.tensor([1])),
        ]
    ).mean()
    assert partial_cross_entropy(logits, labels, ignore_index=3).item() == pytest.approx(want.item())


def test_no_labelled_pixel_gives_zero_with_gradient():
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    loss = partial_cross_entropy(logits, torch.full((1, 3, 3), 2), ignore_index=2)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and torch.all(logits.grad == 0)


def test_shape_mismatch_is_a_user_error():
    with pytest.raises(UserError, match="labels shape"):
        partial_cross_entropy(torch.randn(1, 2, 3, 3), torch.zeros(1, 3, 4, dtype=torch.long), 2)
