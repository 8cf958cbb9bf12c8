"""SiteDataset: seeded disjoint train/val splits, item format, label kinds, augmentation seeding."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fedicra.data.dataset import SiteDataset, train_val_split
from fedicra.data.errors import DataError
from fedicra.data.manifest import Manifest
from fedicra.data.synth import synthesize


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("dataset") / "odoc"
    synthesize("odoc", path, size=32, seed=0, scale=0.25)  # train 6/4/5/10/2
    return path


@pytest.fixture(scope="module")
def manifest(root):
    return Manifest.load(root)


def test_splits_are_disjoint_and_cover_training_cases(root, manifest):
    for site in range(5):
        train = SiteDataset(root, manifest, site, "train", "scribble")
        val = SiteDataset(root, manifest, site, "val", "scribble")
        test = SiteDataset(root, manifest, site, "test", "scribble")
        assert not set(train.cases) & set(val.cases)
        all_train = sorted(p.stem for p in (root / manifest.sites[site].name / "train").glob("*.h5"))
        assert sorted(train.cases + val.cases) == all_train
        assert len(val) == max(1, round(0.2 * len(all_train)))
        assert len(test) >= 1


def test_split_is_seeded(root, manifest):
    a = SiteDataset(root, manifest, 3, "val", "mask", seed=1).cases
    b = SiteDataset(root, manifest, 3, "val", "mask", seed=1).cases
    others = {tuple(SiteDataset(root, manifest, 3, "val", "mask", seed=s).cases) for s in range(2, 8)}
    assert a == b
    assert len(others | {tuple(a)}) > 1
    train, val = train_val_split(list(range(10)), 0.3, seed=0, site=0)
    assert len(val) == 3 and sorted(train + val) == list(range(10))
    assert train_val_split(list(range(10)), 0.0, seed=0, site=0) == (list(range(10)), [])


def test_items_and_label_kinds(root, manifest):
    train = SiteDataset(root, manifest, 0, "train", "keypoint")
    item = train[0]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 32, 32)
    assert item["label"].dtype == torch.int64 and item["label"].shape == (32, 32)
    assert isinstance(item["case"], str)
    assert (train.labels == manifest.unlabeled).mean() > 0.5  # sparse: mostly unlabeled
    val = SiteDataset(root, manifest, 0, "val", "keypoint")
    assert val.label_kind == "mask" and val.labels.max() < manifest.num_classes
    full = SiteDataset(root, manifest, 0, "train", "mask")
    assert full.labels.max() < manifest.num_classes
    batch = next(iter(DataLoader(train, batch_size=2)))
    assert batch["image"].shape == (2, 3, 32, 32) and batch["label"].shape == (2, 32, 32)


def test_one_channel_images_get_a_channel_axis(tmp_path):
    synthesize("faz", tmp_path / "faz", size=32, seed=0, cases=2)
    manifest = Manifest.load(tmp_path / "faz")
    item = SiteDataset(tmp_path / "faz", manifest, "Domain2", "test", "mask")[0]
    assert item["image"].shape == (1, 32, 32)


def test_errors(root, manifest):
    with pytest.raises(DataError, match="unknown split"):
        SiteDataset(root, manifest, 0, "dev", "mask")
    with pytest.raises(DataError, match="unknown label kind 'dots'"):
        SiteDataset(root, manifest, 0, "train", "dots")
    assert len(SiteDataset(root, manifest, 0, "val", "mask", val_fraction=0.0)) == 0  # no selection split
    with pytest.raises(DataError, match="val_fraction"):
        SiteDataset(root, manifest, 0, "train", "mask", val_fraction=1.0)
    with pytest.raises(DataError, match="unknown site 'Domain9'"):
        SiteDataset(root, manifest, "Domain9", "train", "mask")
    with pytest.raises(DataError, match="out of range"):
        SiteDataset(root, manifest, 7, "train", "mask")


def test_missing_label_kind_in_file(tmp_path):
    """Upstream ODOC training files have no `box`: asking for it names the file and the key."""
    import h5py

    synthesize("odoc", tmp_path / "o", size=32, seed=0, cases=2)
    manifest = Manifest.load(tmp_path / "o")
    for path in (tmp_path / "o" / "Domain1" / "train").glob("*.h5"):
        with h5py.File(path, "a") as f:
            del f["box"]
    with pytest.raises(DataError, match=r"case000\d\.h5: missing dataset 'box'"):
        SiteDataset(tmp_path / "o", manifest, 0, "train", "box", val_fraction=0.0)
    assert len(SiteDataset(tmp_path / "o", manifest, 0, "train", "scribble", val_fraction=0.0)) == 2
    assert np.isfinite(SiteDataset(tmp_path / "o", manifest, 0, "test", "mask").images).all()
