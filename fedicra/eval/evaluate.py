"""Scoring a model on a dataset: argmax of the main logits, no test-time augmentation, whole images.

``evaluate`` returns one row per case with the metrics of ``fedicra.eval.metrics.score_case`` and their
means over structures. The model is put in eval mode for the pass and given back in the mode it had.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from fedicra.errors import UserError
from fedicra.eval.metrics import score_case


def _model_device(model: torch.nn.Module) -> torch.device:
    tensor = next(iter(model.parameters()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


class _EvalMode:
    """Eval mode and no grad inside the block; the model's previous train/eval mode afterwards."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.no_grad = torch.no_grad()
        self.no_grad.__enter__()
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)
        self.no_grad.__exit__(*exc)


def _argmax(model, images: torch.Tensor, site) -> np.ndarray:
    logits = model(images, site=site, aux=False)["logits"]
    return logits.argmax(dim=1).cpu().numpy().astype(np.int64)


def predict(model: torch.nn.Module, image, site: int | None = None) -> np.ndarray:
    """Label map (int64 numpy) of one image (C,H,W) -> (H,W), or of a batch (B,C,H,W) -> (B,H,W).

    ``image`` is a numpy array or tensor; it runs on the model's device, in eval mode, without grad.
    """
    images = image.float() if torch.is_tensor(image) else torch.as_tensor(np.asarray(image, dtype=np.float32))
    single = images.ndim == 3
    if single:
        images = images[None]
    if images.ndim != 4:
        raise UserError(f"predict: image has shape {tuple(images.shape)}; expected (C,H,W) or (B,C,H,W)")
    with _EvalMode(model):
        labels = _argmax(model, images.to(_model_device(model)), site)
    return labels[0] if single else labels


def _batches(dataset, batch_size: int):
    """Consecutive items grouped into batches of equal image shape."""
    batch = []
    for index in range(len(dataset)):
        item = dataset[index]
        if batch and (len(batch) == batch_size or batch[0]["image"].shape != item["image"].shape):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def evaluate(model: torch.nn.Module, dataset, structures: dict, device=None, policy: str = "intended",
             site: int | None = None, batch_size: int = 1) -> pd.DataFrame:
    """Score every case of ``dataset`` (items: image float32 (C,H,W), label int64 (H,W), case str).

    Columns: ``case``, then ``dice_<s>, hd95_<s>, assd_<s>, jaccard_<s>`` per structure ``s``, then
    ``mean_dice`` and ``mean_hd95`` (means over structures). ``device=None`` uses the model's device; another
    device moves the model there. ``site`` is passed to the model (None = its own site).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"evaluate: batch_size={batch_size!r} must be a positive integer")
    if device is not None:
        model.to(device)
    device = _model_device(model)
    rows = []
    with _EvalMode(model):
        for batch in _batches(dataset, batch_size):
            images = torch.stack([torch.as_tensor(item["image"], dtype=torch.float32) for item in batch])
            predictions = _argmax(model, images.to(device), site)
            for item, prediction in zip(batch, predictions):
                label = np.asarray(item["label"])
                rows.append({"case": str(item["case"]), **score_case(prediction, label, structures, policy)})
    columns = ["case"] + [f"{m}_{s}" for s in structures for m in ("dice", "hd95", "assd", "jaccard")]
    table = pd.DataFrame(rows, columns=columns)
    table["mean_dice"] = table[[f"dice_{s}" for s in structures]].mean(axis=1)
    table["mean_hd95"] = table[[f"hd95_{s}" for s in structures]].mean(axis=1)
    return table
