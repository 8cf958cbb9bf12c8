"""Scoring a model on an in-memory dataset, and single-image prediction."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fedicra.errors import UserError
from fedicra.eval import evaluate, predict, score_case
from fedicra.models import build_model


class ThresholdModel(nn.Module):
    """Predicts class 1 where the first image channel exceeds 0.5; records mode and site of each call."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.calls = []

    def forward(self, x, site=None, aux=True):
        self.calls.append((self.training, torch.is_grad_enabled(), site, x.shape[0]))
        foreground = (x[:, :1] - 0.5) * self.scale
        return {"logits": torch.cat([torch.zeros_like(foreground), foreground], dim=1)}


def _item(case, image, label):
    return {"image": image[None].astype(np.float32), "label": label.astype(np.int64), "case": case}


def _dataset():
    label = np.zeros((32, 32))
    label[8:16, 8:16] = 1
    shifted = np.zeros((32, 32))
    shifted[8:16, 8:24] = 1  # prediction twice the truth: dice 2/3
    return [_item("exact", label, label), _item("wide", shifted, label), _item("missed", np.zeros((32, 32)), label)]


def test_evaluate_scores_each_case():
    model = ThresholdModel().train()
    table = evaluate(model, _dataset(), {"faz": (1,)}, device="cpu", batch_size=2, site=3)
    assert list(table.columns) == ["case", "dice_faz", "hd95_faz", "assd_faz", "jaccard_faz", "mean_dice", "mean_hd95"]
    assert list(table["case"]) == ["exact", "wide", "missed"]
    assert table["dice_faz"].tolist() == pytest.approx([1.0, 2 / 3, 0.0])
    assert table["hd95_faz"][2] == pytest.approx(np.hypot(31, 31))  # intended policy: missed = worst distance
    assert (table["mean_dice"] == table["dice_faz"]).all()
    # eval mode, no grad, site passed through, batches of 2 then 1; the training mode comes back
    assert model.calls == [(False, False, 3, 2), (False, False, 3, 1)]
    assert model.training
    upstream = evaluate(model, _dataset(), {"faz": (1,)}, policy="upstream")
    assert upstream["hd95_faz"][2] > 0 and upstream["dice_faz"][2] == 0.0  # scored against the placeholder disc


def test_evaluate_two_structures_means():
    gt = np.zeros((32, 32))
    gt[8:24, 8:24] = 2
    gt[12:20, 12:20] = 1

    class Fixed(nn.Module):
        def forward(self, x, site=None, aux=True):
            # predicts the disc right but no cup: cup dice 0, disc dice 1
            logits = torch.zeros(x.shape[0], 3, 32, 32)
            logits[:, 2] = torch.as_tensor(gt > 0, dtype=torch.float32)
            return {"logits": logits}

    item = {"image": np.zeros((3, 32, 32), np.float32), "label": gt.astype(np.int64), "case": "c1"}
    table = evaluate(Fixed(), [item], {"cup": (1,), "disc": (1, 2)})
    row = table.iloc[0]
    assert [c for c in table.columns if c.startswith("dice")] == ["dice_cup", "dice_disc"]
    assert (row["dice_cup"], row["dice_disc"], row["mean_dice"]) == (0.0, 1.0, 0.5)
    assert row["mean_hd95"] == pytest.approx((np.hypot(31, 31) + 0.0) / 2)


def test_evaluate_real_model_batches_and_predict_agree():
    torch.manual_seed(0)
    model = build_model("unet_lc", 1, 2, num_sites=2, site=1)
    rng = np.random.default_rng(0)
    items = [_item(f"c{i}", rng.random((32, 32)), rng.random((32, 32)) > 0.5) for i in range(3)]
    items.append(_item("big", rng.random((48, 48)), rng.random((48, 48)) > 0.5))  # other size: own batch
    one = evaluate(model, items, {"faz": (1,)}, batch_size=1)
    many = evaluate(model, items, {"faz": (1,)}, batch_size=3)
    pd.testing.assert_frame_equal(one, many)
    assert model.training  # restored
    pred = predict(model, items[3]["image"])
    assert pred.shape == (48, 48) and pred.dtype == np.int64 and set(np.unique(pred)) <= {0, 1}
    expected = score_case(pred, items[3]["label"], {"faz": (1,)})["dice_faz"]
    assert one.loc[3, "dice_faz"] == pytest.approx(expected)
    batch = predict(model, torch.as_tensor(np.stack([it["image"] for it in items[:2]])), site=0)
    assert batch.shape == (2, 32, 32)
    assert np.array_equal(batch[0], predict(model, items[0]["image"], site=0))


def test_bad_arguments():
    with pytest.raises(UserError, match="batch_size=0"):
        evaluate(ThresholdModel(), _dataset(), {"faz": (1,)}, batch_size=0)
    with pytest.raises(UserError, match="expected"):
        predict(ThresholdModel(), np.zeros((32, 32), np.float32))
