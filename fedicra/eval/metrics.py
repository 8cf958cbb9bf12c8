"""Per-case segmentation metrics: Dice, HD95, ASSD and Jaccard per foreground structure (medpy, pixel units).

A structure is a set of label values: FAZ ``{"faz": (1,)}``; ODOC ``{"cup": (1,), "disc": (1, 2)}`` (the disc
is every pixel labelled cup or rim). Both prediction and ground truth are reduced to the binary mask
``label in values`` before scoring. Distances use medpy's defaults: unit pixel spacing, 1-connectivity
borders. HD95 and ASSD are undefined when either mask is empty (medpy raises), so an empty-mask policy is
needed; two are available (details and rationale in docs/metrics.md):

``policy="intended"`` (default), per structure:
  * both masks empty: dice = jaccard = 1, hd95 = assd = 0 (a perfect "nothing there");
  * exactly one empty: dice = jaccard = 0, hd95 = assd = the image diagonal sqrt((H-1)^2 + (W-1)^2), the
    largest distance two pixels of the image can have (the worst possible score).

``policy="upstream"`` reproduces upstream's final test script (reference 7.2):
  * if the whole prediction is background, a filled disc of radius 1 (the centre pixel and its four
    neighbours) with label 1 is drawn at row 192, column 192; in an image with fewer than 193 rows
    (columns) the disc goes to the middle row (column) ``H // 2`` (``W // 2``) instead;
  * then, per structure: an empty prediction scores all zeros (dice = jaccard = hd95 = assd = 0, an
    optimistic distance); an empty ground truth with a non-empty prediction (upstream crashes in medpy)
    scores dice = jaccard = 0 and hd95 = assd = the image diagonal; otherwise medpy's values.
"""
from __future__ import annotations

import math

import numpy as np
from medpy.metric import binary

from fedicra.errors import UserError

POLICIES = ("intended", "upstream")
METRICS = ("dice", "hd95", "assd", "jaccard")
UPSTREAM_DISC_CENTRE = 192  # pixel (row, column) of upstream's placeholder disc


def _check(pred: np.ndarray, gt: np.ndarray, structures: dict, policy: str) -> None:
    if policy not in POLICIES:
        raise UserError(f"metric policy {policy!r} is unknown; valid: {', '.join(POLICIES)}")
    if pred.shape != gt.shape or pred.ndim != 2:
        raise UserError(f"prediction shape {pred.shape} and label shape {gt.shape} must be equal and 2-D")
    if not structures:
        raise UserError("structures is empty; give at least one structure, e.g. {'faz': (1,)}")


def image_diagonal(shape: tuple[int, int]) -> float:
    """Largest distance between two pixels of an image of this shape."""
    return math.hypot(shape[0] - 1, shape[1] - 1)


def upstream_placeholder(pred: np.ndarray) -> np.ndarray:
    """Upstream's fix for an all-background prediction: a radius-1 disc of label 1 at (192, 192)."""
    if pred.any():
        return pred
    out = pred.copy()
    row = UPSTREAM_DISC_CENTRE if pred.shape[0] > UPSTREAM_DISC_CENTRE else pred.shape[0] // 2
    col = UPSTREAM_DISC_CENTRE if pred.shape[1] > UPSTREAM_DISC_CENTRE else pred.shape[1] // 2
    for dr, dc in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)):
        r, c = row + dr, col + dc
        if 0 <= r < out.shape[0] and 0 <= c < out.shape[1]:
            out[r, c] = 1
    return out


def _score_masks(p: np.ndarray, g: np.ndarray, policy: str, diagonal: float) -> dict[str, float]:
    p_any, g_any = bool(p.any()), bool(g.any())
    if p_any and g_any:
        return {"dice": float(binary.dc(p, g)), "hd95": float(binary.hd95(p, g)),
                "assd": float(binary.assd(p, g)), "jaccard": float(binary.jc(p, g))}
    if policy == "upstream" and not p_any:
        return {"dice": 0.0, "hd95": 0.0, "assd": 0.0, "jaccard": 0.0}
    if not p_any and not g_any:
        return {"dice": 1.0, "hd95": 0.0, "assd": 0.0, "jaccard": 1.0}
    return {"dice": 0.0, "hd95": diagonal, "assd": diagonal, "jaccard": 0.0}


def score_case(pred, gt, structures: dict, policy: str = "intended") -> dict[str, float]:
    """Scores of one case: keys ``<metric>_<structure>`` for metric in dice, hd95, assd, jaccard.

    ``pred`` and ``gt`` are integer label maps (H, W); ``structures`` maps a name to its label values.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    _check(pred, gt, structures, policy)
    if policy == "upstream":
        pred = upstream_placeholder(pred)
    diagonal = image_diagonal(pred.shape)
    scores = {}
    for name, values in structures.items():
        values = list(values)
        result = _score_masks(np.isin(pred, values), np.isin(gt, values), policy, diagonal)
        scores.update({f"{metric}_{name}": result[metric] for metric in METRICS})
    return scores
