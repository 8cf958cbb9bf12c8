"""Upstream's training augmentation (reference 2.5), driven by an explicit numpy Generator.

Upstream draws from the global NumPy state, which DataLoader workers share unseeded (quirk 23); here
the caller passes a seeded `numpy.random.Generator` so every worker and every run is repeatable.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

MAX_ANGLE = 45  # integer angles in [-45, 44], as upstream's randint(-45, 45)


def rot_flip(image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
    """Rotate by k*90 degrees (k uniform in 0..3), then always flip along one spatial axis."""
    k = int(rng.integers(0, 4))
    image = np.rot90(image, k, axes=(-2, -1))
    label = np.rot90(label, k, axes=(-2, -1))
    axis = -2 + int(rng.integers(0, 2))  # up-down or left-right
    return np.flip(image, axis=axis), np.flip(label, axis=axis)


def rotate(image: np.ndarray, label: np.ndarray, rng: np.random.Generator, image_fill: float, label_fill: int):
    """Rotate about the centre by an integer angle, nearest neighbour, same size, constant fill."""
    angle = int(rng.integers(-MAX_ANGLE, MAX_ANGLE))
    spatial = (-1, -2)  # same rotation sense for (H,W) labels and (C,H,W) images
    image = ndimage.rotate(image, angle, axes=spatial, reshape=False, order=0, mode="constant", cval=image_fill)
    label = ndimage.rotate(label, angle, axes=spatial, reshape=False, order=0, mode="constant", cval=label_fill)
    return image, label


def augment(image: np.ndarray, label: np.ndarray, rng: np.random.Generator, image_fill: float,
            label_fill: int) -> tuple[np.ndarray, np.ndarray]:
    """Image (C,H,W) or (H,W) and label (H,W): p=0.5 rot90+flip, then p=0.5 free rotation.

    `image_fill` is 0.8 for FAZ and 0.0 for ODOC (upstream); `label_fill` is the unlabeled value
    (num_classes), so rotated-in corners never count as supervision.
    """
    if rng.random() < 0.5:
        image, label = rot_flip(image, label, rng)
    if rng.random() < 0.5:
        image, label = rotate(image, label, rng, image_fill, label_fill)
    return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(label)
