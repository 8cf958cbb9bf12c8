"""Read a run's predictions.npz (one test case per site) for the qualitative figure.

Two layouts are accepted, because the contract fixes the content but not the key names:
- stacked: `image` [K,...], `mask` [K,H,W], `label` [K,H,W], `prediction` [K,H,W], optional
  `site_names` [K] and `cases` [K];
- per site: `<site>_<kind>` or `<site>/<kind>` with kind in image, mask, label, prediction.
Extra keys such as `<site>/train_image` are ignored. Aliases: `gt` for mask, `train_label`/`sparse_label`/`sparse` for label, `pred` for prediction.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fedicra.errors import UserError
from fedicra.report.stats import natural_key

KINDS = {"image": "image", "mask": "mask", "gt": "mask", "label": "label", "train_label": "label",
         "sparse_label": "label", "sparse": "label", "prediction": "prediction", "pred": "prediction"}
_PER_SITE = re.compile(r"^(?P<site>.+?)[_/](?P<kind>" + "|".join(sorted(KINDS, key=len, reverse=True)) + r")$")


def read_predictions(path: Path) -> list[dict]:
    """One dict per site: site, case, image (H,W) or (C,H,W), mask, label, prediction."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: unreadable predictions file ({err})") from None
    stacked = {KINDS[k]: v for k, v in arrays.items() if k in KINDS}
    if {"image", "mask", "prediction"} <= set(stacked):
        count = len(stacked["mask"])
        names = arrays.get("site_names", arrays.get("sites", np.array([f"site{k}" for k in range(count)])))
        cases = arrays.get("cases", np.array([""] * count))
        return [{"site": str(names[k]), "case": str(cases[k]), "image": stacked["image"][k],
                 "mask": stacked["mask"][k], "label": stacked["label"][k] if "label" in stacked else None,
                 "prediction": stacked["prediction"][k]} for k in range(count)]
    sites: dict[str, dict] = {}
    for key, value in arrays.items():
        if key.endswith("train_image"):  # the training case's image; the panel shows the test image
            continue
        match = _PER_SITE.match(key)
        if match:
            sites.setdefault(match["site"], {"site": match["site"], "case": "", "label": None})[
                KINDS[match["kind"]]] = value
    entries = [s for s in sites.values() if {"image", "mask", "prediction"} <= set(s)]
    if not entries:
        raise UserError(f"{path}: no image/mask/prediction arrays found (keys: {', '.join(sorted(arrays))})")
    return sorted(entries, key=lambda e: natural_key(e["site"]))
