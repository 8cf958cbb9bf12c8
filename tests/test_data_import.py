"""`fedicra data import`: PNG folders -> site layout (real FAZ sample and small hand-made folders)."""
import numpy as np
import pytest
from PIL import Image

from fedicra.cli import main
from fedicra.data.importer import load_mask
from fedicra.data.layout import list_cases, read_case
from fedicra.data.manifest import Manifest


def run_cli(capsys, *argv):
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def test_import_faz_octa_mini_then_check(faz_mini_root, tmp_path, capsys):
    out = tmp_path / "faz-mini"
    args = ["data", "import", "--images", faz_mini_root / "images", "--masks", faz_mini_root / "masks",
            "--task", "faz", "--site-pattern", "deep_*=deep", "--site-pattern", "superficial_*=superficial",
            "--size", 64, "--test-fraction", 0.25, "--seed", 0, "--name", "faz-mini",
            "--mask-colors", "255,255,0=1", "255,0,255=1",
            "0,0,0=0"]
    code, _, err = run_cli(capsys, *args, "--out", out)
    assert code == 0, err
    code, summary, err = run_cli(capsys, "data", "check", out)
    assert code == 0, err
    manifest = Manifest.load(out)
    assert manifest.site_names == ["deep", "superficial"]
    assert manifest.default_labels == ["scribble_noisy", "keypoint"]
    n_images = {s: len(list((faz_mini_root / "images").glob(f"{s}_*.png"))) for s in ("deep", "superficial")}
    for index, site in enumerate(manifest.site_names):
        train, test = (list_cases(out, manifest, index, split) for split in ("train", "test"))
        assert len(train) + len(test) == n_images[site]
        assert len(test) == round(0.25 * n_images[site])
        arrays = read_case(train[0], manifest)
        assert arrays["image"].shape == (1, 64, 64)
        assert arrays["image"].min() == 0.0 and arrays["image"].max() == 1.0
        assert 0.002 < arrays["mask"].mean() < 0.2  # a FAZ, not an empty or full mask
    assert (out / "NOTICE.md").is_file()  # CC BY attribution travels with the derived data
    # the same command again (default colour rule: any non-black pixel = FAZ) gives the same bytes
    code, _, err = run_cli(capsys, *args[:-4], "--out", tmp_path / "again")
    assert code == 0, err
    assert (out / "checksums.sha256").read_text() == (tmp_path / "again" / "checksums.sha256").read_text()


def write_png(path, array):
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


@pytest.fixture
def folders(tmp_path):
    """Six 40x40 fundus-like RGB images with colour masks, two 'sites' by file name."""
    images, masks = tmp_path / "imgs", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    yy, xx = np.mgrid[:40, :40]
    for i, name in enumerate(["a_1", "a_2", "a_3", "b_1", "b_2", "b_3"]):
        r = np.hypot(yy - 20 - i % 3, xx - 20)
        image = np.stack([100 + 50 * (r < 12), 40 + 100 * (r < 12), 20 + 120 * (r < 5)], axis=-1)
        mask = np.zeros((40, 40, 3))
        mask[r < 12] = (0, 255, 0)  # disc rim
        mask[r < 5] = (255, 0, 0)  # cup
        write_png(images / f"{name}.png", image)
        write_png(masks / f"{name}.png", mask)
    return images, masks


def odoc_args(images, masks, out):
    return ["data", "import", "--images", images, "--masks", masks, "--out", out, "--task", "odoc", "--size", 32,
            "--site-pattern", "a_*=siteA", "--site-pattern", "b_*=siteB", "--test-fraction", 0.34,
            "--mask-colors", "0,0,0=0", "255,0,0=1", "0,255,0=2"]


def test_import_colour_masks_for_odoc(folders, tmp_path, capsys):
    images, masks = folders
    out = tmp_path / "odoc"
    code, _, err = run_cli(capsys, *odoc_args(images, masks, out), "--site-label", "siteB=box")
    assert code == 0, err
    assert run_cli(capsys, "data", "check", out)[0] == 0
    manifest = Manifest.load(out)
    assert manifest.default_labels == ["scribble", "box"]
    arrays = read_case(list_cases(out, manifest, 0, "train")[0], manifest)
    assert arrays["image"].shape == (3, 32, 32)
    assert set(np.unique(arrays["mask"]).tolist()) == {0, 1, 2}
    cup = arrays["mask"] == 1
    assert arrays["image"][2][cup].mean() > arrays["image"][2][~cup].mean()  # blue channel kept in place
    assert len(list_cases(out, manifest, 1, "test")) == 1


def test_unmapped_colour_is_an_error_and_writes_nothing(folders, tmp_path, capsys):
    images, masks = folders
    mask = np.array(Image.open(masks / "b_2.png"))
    mask[0, 0] = (9, 9, 9)
    write_png(masks / "b_2.png", mask)
    out = tmp_path / "odoc"
    code, _, err = run_cli(capsys, *odoc_args(images, masks, out))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "b_2.png" in err and "(9, 9, 9)" in err
    assert not out.exists() and not any(p.name.startswith(".odoc") for p in tmp_path.iterdir())


@pytest.mark.parametrize("change, needles", [
    (lambda i, m: (m / "a_2.png").unlink(), ["a_2.png", "no mask with the same name"]),
    (lambda i, m: (i / "c_1.png").write_bytes((i / "a_1.png").read_bytes()), ["c_1.png", "matches no --site-pattern"]),
    (lambda i, m: (i / "a_3.png").write_bytes(b"not a png"), ["a_3.png", "cannot read image"]),
])
def test_bad_inputs(folders, tmp_path, capsys, change, needles):
    images, masks = folders
    change(images, masks)
    code, _, err = run_cli(capsys, *odoc_args(images, masks, tmp_path / "out"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    for needle in needles:
        assert needle in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, needle", [
    (["--test-fraction", "1.0"], "--test-fraction"),
    (["--mask-colors", "1,2=1"], "--mask-colors '1,2=1'"),
    (["--mask-colors", "0,0,0=5"], "class must be in 0..2"),
    (["--site-label", "siteC=scribble"], "no such site"),
    (["--site-label", "siteA=lasso"], "unknown label kind 'lasso'"),
    (["--site-pattern", "z_*=siteZ"], "no image matches"),
])
def test_bad_options(folders, tmp_path, capsys, extra, needle):
    images, masks = folders
    code, _, err = run_cli(capsys, *odoc_args(images, masks, tmp_path / "out"), *extra)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_mask_rules(tmp_path):
    index = tmp_path / "index.png"
    write_png(index, np.array([[0, 1], [2, 1]]))
    assert load_mask(index, 3, 2, None).tolist() == [[0, 1], [2, 1]]  # index mask kept as is
    grey = tmp_path / "grey.png"
    write_png(grey, np.array([[0, 170], [85, 0]]))
    assert load_mask(grey, 3, 2, {(0,): 0, (170,): 1, (85,): 2}).tolist() == [[0, 1], [2, 0]]
    assert load_mask(grey, 2, 2, None).tolist() == [[0, 1], [1, 0]]  # binary: non-black = foreground
    from fedicra.data.errors import DataError

    with pytest.raises(DataError, match="give --mask-colors"):
        load_mask(grey, 3, 2, None)
