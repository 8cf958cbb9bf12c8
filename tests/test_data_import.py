"""`fedicra data import`: PNG folders -> site layout (real FAZ sample and small hand-made folders)."""
import shutil

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


def test_shipped_faz_sample_is_small_attributed_and_imports(tmp_path, capsys):
    from fedicra.data.builtin import builtin_folders

    images, masks = builtin_folders("faz-octa-mini")
    names = sorted(p.name for p in images.glob("*.png"))
    assert names == sorted(p.name for p in masks.glob("*.png"))
    assert sum(n.startswith("deep_") for n in names) == 18 and sum(n.startswith("superficial_") for n in names) == 14
    files = [*images.iterdir(), *masks.iterdir()]
    assert sum(p.stat().st_size for p in files) < 600_000  # a few hundred kB, never the 512 px originals
    for path in files:
        with Image.open(path) as img:
            assert max(img.size) <= 128
    notice = (images.parent / "NOTICE.md").read_text()
    assert "CC BY 4.0" in notice and "10.5281/zenodo.5075194" in notice
    out = tmp_path / "faz-mini"
    code, _, err = run_cli(capsys, "data", "import", "--images", images, "--masks", masks, "--out", out,
                           "--task", "faz", "--size", 64, "--site-pattern", "deep_*=deep",
                           "--site-pattern", "superficial_*=superficial")
    assert code == 0, err
    manifest = Manifest.load(out)
    assert (out / "NOTICE.md").read_text() == notice  # the attribution travels with the derived data
    arrays = read_case(list_cases(out, manifest, 0, "train")[0], manifest)
    assert arrays["image"].shape == (1, 64, 64) and 0.002 < arrays["mask"].mean() < 0.2


def test_workflow_prefers_a_configured_full_resolution_folder_over_the_shipped_copy(tmp_path):
    import os
    import shlex
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((repo / "config/default.yaml").read_text())
    config["datasets"] = {"faz-mini": config["datasets"]["faz-mini"]}
    config["methods"] = ["local"]

    def import_command(images: str) -> str:
        config["datasets"]["faz-mini"].update(images=images, masks=images.replace("images", "masks"))
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
        env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / ".cache"), PYTHONPATH=str(repo))
        result = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-s", str(repo / "Snakefile"),
                                 "--directory", str(tmp_path), "-n", "-p", "--configfile", str(tmp_path / "c.yaml")],
                                capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        return next(line for line in result.stdout.splitlines() if " data import " in line)

    def option(command: str, name: str) -> str:   # the shell quotes a path only where it must
        words = shlex.split(command.split("Shell command:", 1)[-1])
        return words[words.index(name) + 1]

    shipped = import_command(str(tmp_path / "absent/images"))
    assert option(shipped, "--images") == f"{repo}/fedicra/data/builtin/faz_octa_mini/images"
    for sub in ("images", "masks"):
        (tmp_path / "full" / sub).mkdir(parents=True)
    full = import_command(str(tmp_path / "full/images"))
    assert option(full, "--images") == f"{tmp_path}/full/images" and option(full, "--masks") == f"{tmp_path}/full/masks"


def dofe_tree(root, sites=("Domain1", "Domain2", "Domain10"), counts=(("train", 3), ("test", 2))):
    """A DoFE / FedDG-style fundus tree: Domain<k>/{train,test}/ROIs/{image,mask}/*.png (grey-coded masks)."""
    yy, xx = np.mgrid[:40, :40]
    for k, site in enumerate(sites):
        for split, n in counts:
            for sub in ("image", "mask"):
                (root / site / split / "ROIs" / sub).mkdir(parents=True)
            for i in range(n):
                r = np.hypot(yy - 20 - i, xx - 20 + k)
                image = np.stack([90 + 60 * (r < 12) + 10 * k, 40 + 100 * (r < 12), 20 + 120 * (r < 5)], axis=-1)
                mask = np.where(r < 5, 0, np.where(r < 12, 128, 255))  # DoFE: 0 cup, 128 disc rim, 255 background
                write_png(root / site / split / "ROIs" / "image" / f"{split}{i}.png", image)
                write_png(root / site / split / "ROIs" / "mask" / f"{split}{i}.png", mask)
    return root


def tree_args(root, out, *extra):
    return ["data", "import", "--tree", root, "--image-dir", "ROIs/image", "--mask-dir", "ROIs/mask", "--out", out,
            "--task", "odoc", "--size", 32, "--mask-colors", "255=0", "0=1", "128=2", *extra]


def test_import_tree_keeps_the_folders_split_and_site_order(tmp_path, capsys):
    root = dofe_tree(tmp_path / "Fundus")
    (root / "NOTICE.txt").write_text("attribution")
    out = tmp_path / "odoc"
    code, _, err = run_cli(capsys, *tree_args(root, out, "--site-label", "Domain10=box"))
    assert code == 0, err
    assert run_cli(capsys, "data", "check", out)[0] == 0
    manifest = Manifest.load(out)
    assert manifest.site_names == ["Domain1", "Domain2", "Domain10"]  # natural order, folder names kept
    assert manifest.default_labels[2] == "box"
    for index in range(3):
        train, test = (sorted(p.stem for p in list_cases(out, manifest, index, split)) for split in ("train", "test"))
        assert train == ["train0", "train1", "train2"] and test == ["test0", "test1"]  # the tree's split
    arrays = read_case(list_cases(out, manifest, 1, "train")[0], manifest)
    assert arrays["image"].shape == (3, 32, 32) and set(np.unique(arrays["mask"]).tolist()) == {0, 1, 2}
    assert "scribble" in arrays and (out / "NOTICE.txt").is_file()
    # --site-glob picks sites; a tree without train/test folders is split by seed like flat folders
    flat = tmp_path / "flat"
    for site in ("A", "B"):
        for sub in ("image", "mask"):
            (flat / site / sub).mkdir(parents=True)
            for i in range(4):
                shutil.copy(root / "Domain1/train/ROIs" / sub / "train0.png", flat / site / sub / f"c{i}.png")
    (flat / "ignored").mkdir()
    code, _, err = run_cli(capsys, "data", "import", "--tree", flat, "--site-glob", "[AB]", "--out", tmp_path / "f",
                           "--task", "odoc", "--size", 32, "--test-fraction", 0.25,
                           "--mask-colors", "255=0", "0=1", "128=2")
    assert code == 0, err
    manifest = Manifest.load(tmp_path / "f")
    assert manifest.site_names == ["A", "B"]
    assert [len(list_cases(tmp_path / "f", manifest, 0, s)) for s in ("train", "test")] == [3, 1]


@pytest.mark.parametrize("change, extra, needles", [
    (lambda r: shutil.rmtree(r / "Domain2/test"), [], ["Domain2", "has a train/ folder but no test/ folder"]),
    (lambda r: (r / "Domain1/test/ROIs/mask/test1.png").unlink(), [], ["test1.png", "no mask with the same name"]),
    (lambda r: None, ["--site-glob", "Site*"], ["no site folder matches --site-glob 'Site*'"]),
    (lambda r: shutil.rmtree(r / "Domain1/train/ROIs/mask"), [], ["Domain1/train/ROIs/mask", "--mask-dir"]),
    (lambda r: None, ["--images", "x"], ["either --tree or --images"]),
])
def test_import_tree_bad_inputs_are_one_line_and_write_nothing(tmp_path, capsys, change, extra, needles):
    root = dofe_tree(tmp_path / "Fundus")
    change(root)
    code, _, err = run_cli(capsys, *tree_args(root, tmp_path / "out"), *extra)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err
    assert not (tmp_path / "out").exists()
