"""`fedicra data synth`: byte-reproducible, valid, site-dependent, scalable, nothing half-written."""
import hashlib
import time

import numpy as np
import pytest

import fedicra.data.synth as synth
from fedicra.cli import main
from fedicra.data.errors import DataError
from fedicra.data.layout import list_cases, read_case
from fedicra.data.manifest import Manifest


def run_cli(capsys, *argv):
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def tree_digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("task, size", [("faz", 48), ("odoc", 32)])
def test_synth_is_byte_reproducible_and_checks(tmp_path, capsys, task, size):
    args = ["data", "synth", "--task", task, "--size", size, "--seed", 3, "--scale", 0.15]
    assert run_cli(capsys, *args, "--out", tmp_path / "a")[0] == 0
    assert run_cli(capsys, *args, "--out", tmp_path / "b")[0] == 0
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert run_cli(capsys, *args[:-4], "--seed", 4, "--scale", 0.15, "--out", tmp_path / "c")[0] == 0
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "c")
    code, out, err = run_cli(capsys, "data", "check", tmp_path / "a")
    assert code == 0, err
    assert "ok:" in out
    # nothing but the dataset in the parent folder (no temporary leftovers)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]


def test_synth_contents_match_task(tmp_path):
    for task, channels, classes in (("faz", 1, {0, 1}), ("odoc", 3, {0, 1, 2})):
        root = tmp_path / task
        synth.synthesize(task, root, size=48, seed=0, cases=2)
        manifest = Manifest.load(root)
        assert manifest.task == task and manifest.in_channels == channels and manifest.img_size == 48
        arrays = read_case(list_cases(root, manifest, 0, "train")[0], manifest)
        assert arrays["image"].shape == (channels, 48, 48)
        assert set(np.unique(arrays["mask"]).tolist()) == classes
        assert set(arrays) == {"image", "mask", "scribble", "scribble_noisy", "keypoint", "block", "box"}
        test_arrays = read_case(list_cases(root, manifest, 0, "test")[0], manifest)
        assert set(test_arrays) == {"image", "mask"}


def test_faz_phantom_structure():
    """The FAZ is dark and near the centre; the capillary bed around it is brighter."""
    for site, look in enumerate(synth.FAZ_SITES):
        image, mask = synth.faz_phantom(64, look, np.random.default_rng(site))
        ys, xs = np.nonzero(mask)
        assert abs(ys.mean() - 32) < 8 and abs(xs.mean() - 32) < 8
        assert image[mask == 1].mean() < image[mask == 0].mean() - 0.1


def test_odoc_phantom_structure():
    """Cup inside disc, cup brighter than rim, rim brighter than retina."""
    image, mask = synth.odoc_phantom(64, synth.ODOC_SITES[0], np.random.default_rng(0))
    grey = image.mean(axis=0)
    assert (mask == 1).any() and (mask == 2).any()
    assert grey[mask == 1].mean() > grey[mask == 2].mean() > grey[mask == 0].mean()
    # the cup never touches the background: dilating it by one pixel stays inside the disc
    from scipy import ndimage

    assert (mask[ndimage.binary_dilation(mask == 1)] >= 1).all()


def test_sites_differ():
    """Site looks differ in image statistics (domain shift), same seed per case index."""
    stats = []
    for look in synth.ODOC_SITES:
        images = [synth.odoc_phantom(48, look, np.random.default_rng(i))[0] for i in range(3)]
        stats.append(np.mean([im.reshape(3, -1).mean(axis=1) for im in images], axis=0))
    stats = np.array(stats)
    assert np.ptp(stats, axis=0).max() > 0.05
    faz = [synth.faz_phantom(64, look, np.random.default_rng(0))[1].mean() for look in synth.FAZ_SITES]
    assert max(faz) > 1.5 * min(faz)  # structure size / field of view differ


def test_case_counts_are_unequal_and_scalable():
    default = synth.case_counts()
    assert [t for t, _ in default] == [24, 16, 20, 40, 8]
    assert all(test == max(synth.MIN_TEST_CASES, round(train / 3)) for train, test in default)
    assert all(test >= 20 for _, test in synth.case_counts(scale=0.5))
    half = synth.case_counts(scale=0.5)
    assert [t for t, _ in half] == [12, 8, 10, 20, 4]
    assert synth.case_counts(cases=5) == [(5, 2)] * 5
    assert min(t for t, _ in synth.case_counts(scale=0.01)) >= 2
    with pytest.raises(DataError, match="--scale"):
        synth.case_counts(scale=0)


def test_existing_output_needs_force(tmp_path, capsys):
    out = tmp_path / "ds"
    assert run_cli(capsys, "data", "synth", "--task", "faz", "--size", 32, "--cases", 1, "--out", out)[0] == 0
    code, _, err = run_cli(capsys, "data", "synth", "--task", "faz", "--size", 32, "--cases", 1, "--out", out)
    assert code == 2 and "--force" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "data", "synth", "--task", "faz", "--size", 32, "--cases", 1, "--seed", 9,
                           "--out", out, "--force")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_failure_leaves_nothing_behind(tmp_path, capsys, monkeypatch):
    calls = []
    real = synth.make_case

    def failing(*args):
        calls.append(args)
        if len(calls) == 4:
            raise DataError("simulated failure while writing")
        return real(*args)

    monkeypatch.setattr(synth, "make_case", failing)
    code, _, err = run_cli(capsys, "data", "synth", "--task", "faz", "--size", 32, "--cases", 2,
                           "--out", tmp_path / "ds")
    assert code == 2 and "simulated failure" in err
    assert list(tmp_path.iterdir()) == []


def test_bad_size_is_one_line_error(tmp_path, capsys):
    code, _, err = run_cli(capsys, "data", "synth", "--task", "faz", "--size", 8, "--out", tmp_path / "x")
    assert code == 2 and err.startswith("error: --size") and not (tmp_path / "x").exists()


def test_preview_png(tmp_path, capsys):
    out = tmp_path / "ds"
    code, _, err = run_cli(capsys, "data", "synth", "--task", "odoc", "--size", 32, "--cases", 1, "--preview",
                           "--out", out)
    assert code == 0, err
    from PIL import Image

    with Image.open(out / "preview.png") as img:
        assert img.width > 200 and img.height > 200
    assert run_cli(capsys, "data", "check", out)[0] == 0  # the preview is not a dataset file


def test_faz_64px_default_scale_is_fast(tmp_path):
    start = time.perf_counter()
    synth.synthesize("faz", tmp_path / "ds", size=64, seed=0)
    elapsed = time.perf_counter() - start
    assert sum(1 for _ in (tmp_path / "ds").rglob("*.h5")) == 108 + 5 * synth.MIN_TEST_CASES
    assert elapsed < 10, elapsed  # about 1-2 s on an idle core; generous for a shared CI machine
