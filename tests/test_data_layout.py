"""`fedicra data check`: a valid dataset passes; every kind of broken input gives ONE line naming the file."""
import json
import shutil

import h5py
import numpy as np
import pytest

from fedicra.cli import main
from fedicra.data.layout import CHECKSUM_FILE, check_dataset, read_case, write_case
from fedicra.data.manifest import MANIFEST_FILE, Manifest
from fedicra.data.synth import synthesize


def run_cli(capsys, *argv):
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("layout") / "faz"
    synthesize("faz", root, size=32, seed=1, cases=2)
    return root


@pytest.fixture
def ds(pristine, tmp_path):
    """A fresh copy without checksums, so each test sees the error of the file it breaks."""
    root = tmp_path / "ds"
    shutil.copytree(pristine, root)
    (root / CHECKSUM_FILE).unlink()
    return root


def case(root, site="Domain2", split="train", index=0):
    return root / site / split / f"case{index:04d}.h5"


def rewrite(path, **changes):
    """Rewrite a case with some datasets replaced (None = removed), bypassing validation."""
    with h5py.File(path, "r") as f:
        arrays = {k: f[k][()] for k in f}
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    path.unlink()
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f[key] = value


def image_of(path):
    with h5py.File(path, "r") as f:
        return f["image"][()]


def assert_one_line_error(capsys, root, *needles, argv=()):
    code, out, err = run_cli(capsys, "data", "check", root, *argv)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


def test_check_passes_and_prints_summary(pristine, capsys, tmp_path):
    csv = tmp_path / "summary.csv"
    code, out, err = run_cli(capsys, "data", "check", pristine, "--csv", csv)
    assert code == 0, err
    assert "Domain5" in out and "ok:" in out
    import pandas as pd

    table = pd.read_csv(csv)
    assert list(table["train"]) == [2] * 5 and list(table["test"]) == [1] * 5
    assert set(table["channels"]) == {1} and (table["fg_faz"] > 0).all()
    assert table.loc[0, "label_kinds"] == "scribble,scribble_noisy,keypoint,block,box"
    assert list(table["label"]) == ["scribble_noisy", "keypoint", "block", "box", "scribble"]


def test_summary_dataframe_fractions(pristine):
    manifest = Manifest.load(pristine)
    table = check_dataset(pristine, manifest)
    # box labels most pixels (background outside the box); point labels few
    assert table.loc[3, "labelled"] > 0.5 and table.loc[1, "labelled"] < 0.2


def test_upstream_folder_without_manifest_needs_task(ds, capsys):
    (ds / MANIFEST_FILE).unlink()
    assert_one_line_error(capsys, ds, MANIFEST_FILE, "--task")
    code, out, err = run_cli(capsys, "data", "check", ds, "--task", "faz")
    assert code == 0, err
    assert "scribble_noisy" in out  # upstream default map applied to Domain1


def test_missing_dataset_folder(tmp_path, capsys):
    assert_one_line_error(capsys, tmp_path / "nope", "nope", "does not exist")


def test_missing_site_folder(ds, capsys):
    shutil.rmtree(ds / "Domain3")
    assert_one_line_error(capsys, ds, "Domain3", "missing site folder")


def test_missing_split_folder(ds, capsys):
    shutil.rmtree(ds / "Domain2" / "test")
    assert_one_line_error(capsys, ds, "Domain2/test", "missing folder")


def test_site_without_training_cases(ds, capsys):
    for path in (ds / "Domain4" / "train").glob("*.h5"):
        path.unlink()
    assert_one_line_error(capsys, ds, "Domain4/train", "no training cases")


def test_missing_file_listed_in_checksums(pristine, tmp_path, capsys):
    root = tmp_path / "ds"
    shutil.copytree(pristine, root)
    case(root).unlink()
    assert_one_line_error(capsys, root, "case0000.h5", "missing")


def test_changed_file_fails_checksum(pristine, tmp_path, capsys):
    root = tmp_path / "ds"
    shutil.copytree(pristine, root)
    arrays = read_case(case(root), Manifest.load(root))
    arrays["image"] = arrays["image"][0] * 0.5  # still valid, but not the file that was published
    write_case(case(root), arrays)
    assert_one_line_error(capsys, root, "case0000.h5", "checksum mismatch")
    code, _, err = run_cli(capsys, "data", "check", root, "--no-checksums")
    assert code == 0, err


def test_truncated_h5(ds, capsys):
    path = case(ds)
    path.write_bytes(path.read_bytes()[:600])
    assert_one_line_error(capsys, ds, path.name, "cannot read HDF5")


def test_not_an_h5_file(ds, capsys):
    case(ds, "Domain1", "test").write_text("hello")
    assert_one_line_error(capsys, ds, "Domain1/test/case0000.h5", "cannot read HDF5")


def test_missing_key(ds, capsys):
    rewrite(case(ds), mask=None)
    assert_one_line_error(capsys, ds, "case0000.h5", "missing dataset 'mask'")


def test_missing_default_sparse_label(ds, capsys):
    rewrite(case(ds), keypoint=None)  # Domain2 trains with keypoint
    assert_one_line_error(capsys, ds, "Domain2/train/case0000.h5", "'keypoint'")


def test_wrong_image_dtype(ds, capsys):
    rewrite(case(ds), image=image_of(case(ds)).astype(np.float64))
    assert_one_line_error(capsys, ds, "case0000.h5", "float64", "float32")


def test_wrong_label_dtype(ds, capsys):
    with h5py.File(case(ds), "r") as f:
        mask = f["mask"][()]
    rewrite(case(ds), mask=mask.astype(np.int64))
    assert_one_line_error(capsys, ds, "case0000.h5", "'mask'", "int64", "uint8")


def test_wrong_image_ndim(ds, capsys):
    rewrite(case(ds), image=image_of(case(ds))[None, None])
    assert_one_line_error(capsys, ds, "case0000.h5", "4 dimensions")


def test_wrong_label_ndim(ds, capsys):
    rewrite(case(ds), block=np.zeros((1, 32, 32), np.uint8))
    assert_one_line_error(capsys, ds, "case0000.h5", "'block'", "3 dimensions")


def test_image_label_shape_mismatch(ds, capsys):
    rewrite(case(ds), mask=np.zeros((32, 30), np.uint8))
    assert_one_line_error(capsys, ds, "case0000.h5", "'mask' shape (32, 30)", "(32, 32)")


def test_image_size_differs_from_manifest(ds, capsys):
    rewrite(case(ds), image=np.zeros((16, 16), np.float32), **{k: np.zeros((16, 16), np.uint8) for k in
            ("mask", "scribble", "scribble_noisy", "keypoint", "block", "box")})
    assert_one_line_error(capsys, ds, "case0000.h5", "16x16", "img_size is 32")


@pytest.mark.parametrize("value, needle", [(1.5, "outside [0, 1]"), (-0.2, "outside [0, 1]"),
                                           (np.nan, "NaN or Inf"), (np.inf, "NaN or Inf")])
def test_bad_image_values(ds, capsys, value, needle):
    image = image_of(case(ds))
    image[3, 4] = value
    rewrite(case(ds), image=image)
    assert_one_line_error(capsys, ds, "case0000.h5", needle)


def test_mask_value_out_of_range(ds, capsys):
    mask = np.zeros((32, 32), np.uint8)
    mask[0, 0] = 2  # 2 = unlabeled is not allowed in a full FAZ mask
    rewrite(case(ds, split="test"), mask=mask)
    assert_one_line_error(capsys, ds, "Domain2/test/case0000.h5", "'mask' has value 2", "0..1")


def test_sparse_value_out_of_range(ds, capsys):
    rewrite(case(ds), scribble=np.full((32, 32), 7, np.uint8))
    assert_one_line_error(capsys, ds, "case0000.h5", "'scribble' has value 7", "0..2")


def test_channel_counts_differ_across_sites(ds, capsys):
    for path in sorted((ds / "Domain3").rglob("*.h5")):
        rewrite(path, image=np.repeat(image_of(path)[None], 3, axis=0))
    line = assert_one_line_error(capsys, ds, "channel counts differ across sites", "Domain1=1", "Domain3=3")
    assert str(ds) in line


def test_channels_differ_within_a_site(ds, capsys):
    path = case(ds, "Domain2", "test")
    rewrite(path, image=np.repeat(image_of(path)[None], 3, axis=0))
    assert_one_line_error(capsys, ds, "Domain2/test/case0000.h5", "3 channel(s)")


def test_malformed_manifest(ds, capsys):
    (ds / MANIFEST_FILE).write_text(json.dumps({"name": "x", "task": "faz"}))
    assert_one_line_error(capsys, ds, MANIFEST_FILE, "malformed manifest")
    (ds / MANIFEST_FILE).write_text("{not json")
    assert_one_line_error(capsys, ds, MANIFEST_FILE, "cannot read manifest")


def test_manifest_with_unknown_task_or_label(ds, capsys):
    data = json.loads((ds / MANIFEST_FILE).read_text())
    data["sites"][0]["label"] = "polygon"
    (ds / MANIFEST_FILE).write_text(json.dumps(data))
    assert_one_line_error(capsys, ds, "Domain1", "unknown label kind 'polygon'")


def test_write_case_is_atomic_and_reproducible(tmp_path):
    arrays = {"image": np.zeros((8, 8), np.float32), "mask": np.zeros((8, 8), np.uint8)}
    write_case(tmp_path / "a.h5", arrays)
    write_case(tmp_path / "b.h5", arrays)
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5", "b.h5"]
