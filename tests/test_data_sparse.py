"""Sparse label generators: correctness w.r.t. the full mask, coverage, bounds, determinism."""
import numpy as np
import pytest

from fedicra.cli import main
from fedicra.data.manifest import LABEL_KINDS
from fedicra.data.sparse import FRACTION_BOUNDS, SparseParams, make_sparse_labels
from fedicra.data.synth import FAZ_SITES, ODOC_SITES, faz_phantom, odoc_phantom

EXACT_KINDS = ("scribble", "keypoint", "block", "box")


def masks():
    """Synthetic FAZ and ODOC masks at several sizes and sites, plus hand-made corner cases."""
    out = []
    for size in (48, 64, 128):
        for site in range(5):
            out.append((faz_phantom(size, FAZ_SITES[site], np.random.default_rng([size, site]))[1], 2))
            out.append((odoc_phantom(size, ODOC_SITES[site], np.random.default_rng([size, site]))[1], 3))
    tiny = np.zeros((48, 48), np.uint8)
    tiny[20, 30] = 1  # a one-pixel structure
    edge = np.zeros((48, 48), np.uint8)
    edge[:10, :] = 1  # foreground touching the border
    two = np.zeros((64, 64), np.uint8)
    two[5:12, 5:12] = 1
    two[40:60, 30:50] = 1  # two components
    out += [(tiny, 2), (edge, 2), (two, 2)]
    return out


MASKS = masks()


@pytest.fixture(scope="module")
def generated():
    return [(mask, c, make_sparse_labels(mask, c, np.random.default_rng(i))) for i, (mask, c) in enumerate(MASKS)]


def test_labels_agree_with_mask_except_noisy_scribbles(generated):
    for mask, c, labels in generated:
        for kind in EXACT_KINDS:
            lab = labels[kind]
            assert lab.dtype == np.uint8 and lab.shape == mask.shape
            labelled = lab != c
            assert (lab[labelled] == mask[labelled]).all(), kind


def test_every_present_class_gets_a_labelled_pixel(generated):
    for mask, c, labels in generated:
        for kind in EXACT_KINDS + ("scribble_noisy",):
            present = set(np.unique(labels[kind]).tolist()) - {c}
            expected = set(np.unique(mask).tolist())
            if kind == "scribble_noisy":
                # displaced scribbles may be painted over, but the foreground always shows up
                assert expected - {0} <= present | {0}, kind
            else:
                assert expected <= present, (kind, expected, present)


def test_box_marks_background_outside_the_box(generated):
    for mask, c, labels in generated:
        box = labels["box"]
        fg = np.argwhere(mask > 0)
        if not len(fg):
            continue
        inside = box == c
        ys, xs = np.nonzero(inside | (box > 0) & (box < c))
        # the unlabeled region is one rectangle containing the whole foreground
        y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
        assert fg[:, 0].min() >= y0 and fg[:, 0].max() <= y1 and fg[:, 1].min() >= x0 and fg[:, 1].max() <= x1
        outside = np.ones_like(inside)
        outside[y0:y1 + 1, x0:x1 + 1] = False
        assert (box[outside] == 0).all()


def test_noisy_scribbles_are_displaced(generated):
    moved = 0
    for mask, c, labels in generated[:30]:
        noisy = labels["scribble_noisy"]
        labelled = noisy != c
        assert labelled.any()
        moved += int((noisy[labelled] != mask[labelled]).any())
    assert moved >= 5  # at least some noisy scribbles cross a class border


def test_labelled_fractions_within_documented_bounds(generated):
    for mask, c, labels in generated[:30]:  # the realistic phantom masks
        for kind, (lo, hi) in FRACTION_BOUNDS.items():
            share = float(np.mean(labels[kind] != c))
            assert lo <= share <= hi, (kind, share, mask.shape)


def test_seeded_and_independent_per_kind():
    mask, c = MASKS[3]
    a = make_sparse_labels(mask, c, np.random.default_rng(5))
    b = make_sparse_labels(mask, c, np.random.default_rng(5))
    d = make_sparse_labels(mask, c, np.random.default_rng(6))
    only = make_sparse_labels(mask, c, np.random.default_rng(5), kinds=("block",))
    for kind in LABEL_KINDS:
        assert np.array_equal(a[kind], b[kind])
    assert any(not np.array_equal(a[k], d[k]) for k in LABEL_KINDS)
    assert np.array_equal(only["block"], a["block"])


def test_parameters_scale_with_size():
    small, large = SparseParams().for_size(64), SparseParams().for_size(256)
    assert large.erode == 4 * small.erode
    assert large.block_half == (4.0, 8.0) and small.block_half == (1.0, 2.0)
    # blocks are larger at 256 px than at 64 px, in pixels
    mask, c = np.pad(np.ones((120, 120), np.uint8), 68), 2  # 256 px, a large square structure
    big = make_sparse_labels(mask, c, np.random.default_rng(0), kinds=("block",))["block"]
    small_mask = mask[::4, ::4]
    tiny = make_sparse_labels(small_mask, c, np.random.default_rng(0), kinds=("block",))["block"]
    assert (big == 1).sum() > 4 * (tiny == 1).sum()


def test_figure_labels_command(tmp_path, capsys):
    out = tmp_path / "labels.png"
    assert main(["data", "figure-labels", "--task", "odoc", "--size", "64", "--out", str(out)]) == 0
    from PIL import Image

    with Image.open(out) as img:
        assert img.width > 3 * img.height  # seven panels side by side
    assert main(["data", "figure-labels", "--out", str(tmp_path / "missing" / "x.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
