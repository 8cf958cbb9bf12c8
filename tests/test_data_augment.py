"""Upstream augmentation: shapes, fill values, image/label consistency, probabilities, seeding."""
import numpy as np

from fedicra.data.augment import augment, rot_flip, rotate


def pair(channels=1, size=32, classes=3):
    """A label map with distinct values per pixel block and an image that encodes it exactly."""
    rng = np.random.default_rng(0)
    label = rng.integers(0, classes, size=(size, size)).astype(np.uint8)
    image = np.stack([(label + 1) / 10 + 0.01 * c for c in range(channels)]).astype(np.float32)
    return image, label


def decode(image, channel=0):
    return np.rint((image[channel] - 0.01 * channel) * 10 - 1).astype(np.int64)


def test_shapes_dtypes_and_consistency_many_draws():
    for channels, image_fill, label_fill in ((1, 0.8, 2), (3, 0.0, 3)):
        image, label = pair(channels, classes=label_fill)
        rng = np.random.default_rng(1)
        for _ in range(40):
            img, lab = augment(image, label, rng, image_fill, label_fill)
            assert img.shape == image.shape and img.dtype == np.float32
            assert lab.shape == label.shape and lab.dtype == np.uint8
            filled = lab == label_fill
            for c in range(channels):
                # nearest-neighbour: every image pixel comes from the same source pixel as its label
                assert np.allclose(img[c][filled], image_fill)
                assert (decode(img, c)[~filled] == lab[~filled]).all()


def test_rotation_fills_corners_with_task_values():
    seed = next(s for s in range(100) if abs(int(np.random.default_rng(s).integers(-45, 45))) >= 10)
    for channels, image_fill, label_fill in ((1, 0.8, 2), (3, 0.0, 3)):
        image, label = pair(channels, size=40, classes=label_fill)
        img, lab = rotate(image, label, np.random.default_rng(seed), image_fill, label_fill)
        for y, x in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
            assert lab[y, x] == label_fill
            assert (img[:, y, x] == np.float32(image_fill)).all()
        assert lab[20, 20] != label_fill  # the centre stays inside
        assert set(np.unique(lab).tolist()) <= set(range(label_fill + 1))


def test_rot_flip_is_a_pixel_permutation_never_identity():
    image, label = pair(1, classes=3)
    rng = np.random.default_rng(4)
    for _ in range(20):
        img, lab = rot_flip(image, label, rng)
        assert not np.array_equal(lab, label)  # a flip always follows the rotation
        assert np.array_equal(np.sort(lab, axis=None), np.sort(label, axis=None))
        assert (decode(img) == lab).all()


def test_each_step_has_probability_one_half():
    image, label = pair(1, classes=3)
    rng = np.random.default_rng(5)
    n = 400
    unchanged = corners_filled = 0
    for _ in range(n):
        img, lab = augment(image, label, rng, 0.8, 3)
        unchanged += np.array_equal(lab, label)
        corners_filled += lab[0, 0] == 3
    # unchanged only if neither step fires (1/4); the rotation fills corners about half the time
    assert 0.17 < unchanged / n < 0.33
    assert 0.40 < corners_filled / n < 0.60


def test_angles_are_integers_within_upstream_range():
    rng = np.random.default_rng(6)
    angles = [int(rng.integers(-45, 45)) for _ in range(2000)]
    assert min(angles) == -45 and max(angles) == 44
    # and the module draws them the same way: same generator state, same result
    image, label = pair(1)
    a = augment(image, label, np.random.default_rng(9), 0.8, 2)
    b = augment(image, label, np.random.default_rng(9), 0.8, 2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
