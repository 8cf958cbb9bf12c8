"""Per-case metrics against hand-computed cases, and both empty-mask policies."""
import math

import numpy as np
import pytest

from fedicra.errors import UserError
from fedicra.eval.metrics import image_diagonal, score_case, upstream_placeholder

FAZ = {"faz": (1,)}
ODOC = {"cup": (1,), "disc": (1, 2)}


def _square_and_rectangle():
    """Prediction: 10x10 square; truth: 10x20 rectangle sharing its top, bottom and left sides."""
    pred = np.zeros((40, 40), np.int64)
    gt = pred.copy()
    pred[10:20, 10:20] = 1
    gt[10:20, 10:30] = 1
    return pred, gt


@pytest.mark.parametrize("policy", ["intended", "upstream"])
def test_square_in_rectangle_by_hand(policy):
    pred, gt = _square_and_rectangle()
    s = score_case(pred, gt, FAZ, policy=policy)
    assert list(s) == ["dice_faz", "hd95_faz", "assd_faz", "jaccard_faz"]
    assert s["dice_faz"] == pytest.approx(2 * 100 / (100 + 200))
    assert s["jaccard_faz"] == pytest.approx(100 / 200)
    # Borders (1-connectivity): square ring 36 px, rectangle ring 56 px. Square -> rectangle: 28 zeros and
    # 1,2,3,4,4,3,2,1 on the square's right side (sum 20). Rectangle -> square: 28 zeros, 1..10 twice on the
    # top/bottom right halves (sum 110), 10 on each of the 8 inner pixels of its right side (sum 80).
    # The 92 pooled distances end with ten 10s (sorted indices 82..91); the 95th percentile (index 86.45) is 10.
    assert s["hd95_faz"] == pytest.approx(10.0)
    assert s["assd_faz"] == pytest.approx((20 + 110 + 80) / 92)


def test_identical_and_disjoint_pixels():
    gt = np.zeros((32, 32), np.int64)
    gt[4:9, 4:9] = 1
    same = score_case(gt.copy(), gt, FAZ)
    assert same == {"dice_faz": 1.0, "hd95_faz": 0.0, "assd_faz": 0.0, "jaccard_faz": 1.0}
    a, b = np.zeros_like(gt), np.zeros_like(gt)
    a[5, 5] = 1
    b[5, 15] = 1  # two single pixels 10 apart
    s = score_case(a, b, FAZ)
    assert (s["dice_faz"], s["jaccard_faz"]) == (0.0, 0.0)
    assert s["hd95_faz"] == pytest.approx(10.0) and s["assd_faz"] == pytest.approx(10.0)


def test_odoc_structures_use_label_sets():
    gt = np.zeros((32, 32), np.int64)
    gt[8:24, 8:24] = 2  # rim
    gt[12:20, 12:20] = 1  # cup inside
    pred = gt.copy()
    pred[pred == 1] = 2  # cup predicted as rim: disc perfect, cup missed
    s = score_case(pred, gt, ODOC)
    assert s["dice_disc"] == 1.0 and s["hd95_disc"] == 0.0
    assert s["dice_cup"] == 0.0 and s["hd95_cup"] == pytest.approx(math.hypot(31, 31))
    assert set(s) == {f"{m}_{n}" for m in ("dice", "hd95", "assd", "jaccard") for n in ("cup", "disc")}


def test_intended_policy_empty_masks():
    empty = np.zeros((64, 48), np.int64)
    both = score_case(empty, empty, FAZ)
    assert both == {"dice_faz": 1.0, "hd95_faz": 0.0, "assd_faz": 0.0, "jaccard_faz": 1.0}
    blob = empty.copy()
    blob[10:20, 10:20] = 1
    diagonal = math.hypot(63, 47)
    assert image_diagonal(empty.shape) == pytest.approx(diagonal)
    for pred, gt in ((empty, blob), (blob, empty)):
        s = score_case(pred, gt, FAZ)
        assert s == {"dice_faz": 0.0, "hd95_faz": diagonal, "assd_faz": diagonal, "jaccard_faz": 0.0}


def test_upstream_policy_draws_disc_on_empty_prediction():
    empty = np.zeros((256, 256), np.int64)
    disc = upstream_placeholder(empty)
    assert empty.sum() == 0  # input untouched
    assert sorted(zip(*np.nonzero(disc))) == [(191, 192), (192, 191), (192, 192), (192, 193), (193, 192)]
    # a truth equal to that disc scores perfectly; the intended policy scores the miss as worst case
    assert score_case(empty, disc, FAZ, policy="upstream")["dice_faz"] == 1.0
    assert score_case(empty, disc, FAZ, policy="intended")["dice_faz"] == 0.0
    far = empty.copy()
    far[10:20, 10:20] = 1
    s = score_case(empty, far, FAZ, policy="upstream")
    assert s["dice_faz"] == 0.0 and s["hd95_faz"] > 150  # scored against the drawn disc, not zero
    # small images: the disc moves to the centre; a non-empty prediction is left as is
    small = upstream_placeholder(np.zeros((64, 100), np.int64))
    assert small[32, 50] == 1 and small.sum() == 5
    assert upstream_placeholder(far) is far


def test_upstream_policy_empty_structure_scores_zeros():
    gt = np.zeros((32, 32), np.int64)
    gt[8:24, 8:24] = 2
    gt[12:20, 12:20] = 1
    pred = np.where(gt > 0, 2, 0)  # no cup predicted, disc perfect
    s = score_case(pred, gt, ODOC, policy="upstream")
    assert s["dice_cup"] == 0.0 and s["hd95_cup"] == 0.0 and s["assd_cup"] == 0.0  # optimistic upstream zeros
    assert s["dice_disc"] == 1.0
    no_cup = np.where(gt > 0, 2, 0)
    both_empty = score_case(no_cup, no_cup, ODOC, policy="upstream")
    assert both_empty["dice_cup"] == 0.0  # upstream: an empty prediction is a zero even if truth is empty
    assert score_case(no_cup, no_cup, ODOC, policy="intended")["dice_cup"] == 1.0
    # empty truth with a non-empty prediction (upstream crashes in medpy): worst case
    s = score_case(gt, no_cup, ODOC, policy="upstream")
    assert s["dice_cup"] == 0.0 and s["hd95_cup"] == pytest.approx(math.hypot(31, 31))


def test_bad_arguments():
    a = np.zeros((8, 8), np.int64)
    with pytest.raises(UserError, match="policy 'paper' is unknown"):
        score_case(a, a, FAZ, policy="paper")
    with pytest.raises(UserError, match="must be equal"):
        score_case(a, np.zeros((8, 9), np.int64), FAZ)
    with pytest.raises(UserError, match="structures is empty"):
        score_case(a, a, {})
