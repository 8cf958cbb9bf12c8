"""Gated CRF loss: known answers, brute force over pixel pairs, gradients, input checks."""
import math

import pytest
import torch

from fedicra.errors import UserError
from fedicra.losses import gated_crf_loss


def _brute_force(probs, image, radius, sigma_xy, sigma_rgb):
    batch, _, height, width = probs.shape
    total = 0.0
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                for yy in range(max(0, y - radius), min(height, y + radius + 1)):
                    for xx in range(max(0, x - radius), min(width, x + radius + 1)):
                        if (yy, xx) == (y, x):
                            continue
                        colour = ((image[b, :, y, x] - image[b, :, yy, xx]) ** 2).sum() / sigma_rgb**2
                        space = ((y - yy) ** 2 + (x - xx) ** 2) / sigma_xy**2
                        k = torch.exp(-0.5 * (colour + space))
                        total = total + k * (1 - (probs[b, :, y, x] * probs[b, :, yy, xx]).sum())
    return total / (batch * height * width)


def test_identical_one_hot_everywhere_costs_nothing():
    probs = torch.zeros(2, 3, 9, 10)
    probs[:, 1] = 1.0
    assert gated_crf_loss(probs, torch.rand(2, 1, 9, 10)).item() == 0.0


def test_matches_brute_force_double_loop_and_its_gradient():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(1, 3, 4, 5, dtype=torch.float64), dim=1).requires_grad_()
    image = torch.rand(1, 3, 4, 5, dtype=torch.float64)
    for radius, sigma_xy, sigma_rgb in ((1, 6.0, 0.1), (2, 1.5, 0.5), (5, 6.0, 0.3)):
        got = gated_crf_loss(probs, image, radius, sigma_xy, sigma_rgb)
        want = _brute_force(probs, image, radius, sigma_xy, sigma_rgb)
        assert got.item() == pytest.approx(want.item(), rel=1e-12)
        (g_got,) = torch.autograd.grad(got, probs)
        (g_want,) = torch.autograd.grad(want, probs)
        torch.testing.assert_close(g_got, g_want)


def test_hand_computed_two_pixel_case():
    # 1x2 image, radius 1: pixels i, j with P_i = (1, 0), P_j = (0.25, 0.75), grey values 0 and 0.1.
    probs = torch.tensor([[1.0, 0.25], [0.0, 0.75]], dtype=torch.float64).reshape(1, 2, 1, 2)
    image = torch.tensor([0.0, 0.1], dtype=torch.float64).reshape(1, 1, 1, 2)
    k = math.exp(-0.5 * (1 / 36 + 1.0))  # distance 1 px, colour difference = sigma_rgb
    expected = 2 * k * (1 - 0.25) / 2  # both ordered pairs, divided by B*H*W = 2
    assert gated_crf_loss(probs, image).item() == pytest.approx(expected)


def test_gradcheck_and_no_gradient_into_the_image():
    torch.manual_seed(1)
    probs = torch.rand(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    image = torch.rand(1, 1, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: gated_crf_loss(p, image, 2), (probs,))
    gated_crf_loss(probs, image).backward()
    assert image.grad is None


def test_rejects_bad_options():
    probs = torch.rand(1, 2, 4, 4)
    with pytest.raises(UserError, match="radius"):
        gated_crf_loss(probs, torch.rand(1, 1, 4, 4), radius=0)
    with pytest.raises(UserError, match="does not match"):
        gated_crf_loss(probs, torch.rand(1, 1, 5, 4))
    with pytest.raises(UserError, match="sigmas"):
        gated_crf_loss(probs, torch.rand(1, 1, 4, 4), sigma_rgb=0.0)
