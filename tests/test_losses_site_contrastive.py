"""Site contrastive loss: sign, value, stop-gradient on the other sites."""
import pytest
import torch

from fedicra.errors import UserError
from fedicra.losses import site_contrastive_loss


def test_hand_case_value_sign_and_gradients():
    own = torch.ones(2, 4, 1, 1, requires_grad=True)
    others = [torch.zeros(2, 4, 1, 1, requires_grad=True), torch.full((2, 4, 1, 1), 3.0, requires_grad=True)]
    loss = site_contrastive_loss(own, others)
    # MSEs are 1 and 4 -> -(1 + 4) / 2
    assert loss.item() == pytest.approx(-2.5)
    loss.backward()
    # d/d own of -(1/2) sum_k mean((own - o_k)^2) = -(1/2) sum_k 2 (own - o_k) / 8
    expected = -((1.0 - 0.0) + (1.0 - 3.0)) / 8
    torch.testing.assert_close(own.grad, torch.full_like(own, expected))
    assert all(o.grad is None for o in others)


def test_no_other_site_and_shape_mismatch():
    own = torch.rand(1, 4, 1, 1, requires_grad=True)
    assert site_contrastive_loss(own, []).item() == 0.0
    with pytest.raises(UserError, match=r"other_attentions\[0\]"):
        site_contrastive_loss(own, [torch.rand(1, 5, 1, 1)])
