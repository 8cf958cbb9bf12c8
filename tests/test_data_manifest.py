"""Task presets, manifest round trip and inference, annotation assignments."""
import json

import pytest

from fedicra.data.assignment import resolve_assignment
from fedicra.data.errors import DataError
from fedicra.data.manifest import LABEL_KINDS, MANIFEST_FILE, TASKS, Manifest, Site


def test_task_presets_match_the_contract():
    faz, odoc = TASKS["faz"], TASKS["odoc"]
    assert (faz.num_classes, faz.in_channels, faz.structures) == (2, 1, {"faz": (1,)})
    assert (odoc.num_classes, odoc.in_channels, odoc.structures) == (3, 3, {"cup": (1,), "disc": (1, 2)})
    assert faz.default_labels == ("scribble_noisy", "keypoint", "block", "box", "scribble")
    assert odoc.default_labels == ("scribble", "scribble_noisy", "scribble_noisy", "keypoint", "block")
    assert (faz.image_fill, odoc.image_fill) == (0.8, 0.0)
    assert LABEL_KINDS == ("scribble", "scribble_noisy", "keypoint", "block", "box")


def test_save_load_round_trip(tmp_path):
    m = Manifest.for_task("odoc", "mine", ["a", "b"], img_size=48)
    path = m.save(tmp_path)
    assert path.name == MANIFEST_FILE and [p.name for p in tmp_path.iterdir()] == [MANIFEST_FILE]
    loaded = Manifest.load(tmp_path)
    assert loaded == m
    assert loaded.sites == [Site("a", "scribble"), Site("b", "scribble_noisy")]
    assert loaded.unlabeled == 3 and loaded.site_index("b") == 1 and loaded.site_index("1") == 1
    with pytest.raises(DataError, match="dataset task is 'odoc'"):
        Manifest.load(tmp_path, task="faz")


def test_inference_from_upstream_folders(tmp_path):
    for k in (1, 2, 10, 3):
        (tmp_path / f"Domain{k}" / "train").mkdir(parents=True)
    (tmp_path / "notasite").mkdir()
    m = Manifest.load(tmp_path, task="faz")
    assert m.site_names == ["Domain1", "Domain2", "Domain3", "Domain10"]  # numeric order
    assert m.default_labels == ["scribble_noisy", "keypoint", "block", "box"]
    assert m.img_size == 256  # no case to read: the task's native size
    with pytest.raises(DataError, match="--task"):
        Manifest.load(tmp_path)


def test_invalid_manifests(tmp_path):
    with pytest.raises(DataError, match="unknown task 'ct'"):
        Manifest.for_task("ct", "x", ["a"])
    with pytest.raises(DataError, match="duplicate site names"):
        Manifest.for_task("faz", "x", ["a", "a"])
    with pytest.raises(DataError, match="not a plain folder name"):
        Manifest.for_task("faz", "x", ["../up"])
    data = Manifest.for_task("faz", "x", ["a"]).to_dict()
    data["num_classes"] = "two"
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(DataError, match="num_classes must be a positive integer"):
        Manifest.load(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        Manifest.load(tmp_path / "missing")
    with pytest.raises(DataError, match="no dataset.json and no Domain"):
        Manifest.infer(tmp_path, "faz")


def test_assignments():
    m = Manifest.for_task("faz", "x", [f"Domain{k}" for k in range(1, 6)])
    upstream = ["scribble_noisy", "keypoint", "block", "box", "scribble"]
    assert resolve_assignment("upstream", m) == upstream
    assert resolve_assignment("scribble", m) == ["scribble"] * 5
    assert resolve_assignment("mask", m) == ["mask"] * 5
    assert resolve_assignment("box", m) == ["box"] * 5
    assert resolve_assignment("rotate1", m) == upstream[-1:] + upstream[:-1]
    assert resolve_assignment("rotate5", m) == upstream
    r = resolve_assignment("random7", m)
    assert r == resolve_assignment("random7", m) and set(r) <= set(LABEL_KINDS)
    assert len({tuple(resolve_assignment(f"random{s}", m)) for s in range(5)}) > 1
    for bad in ("rotate", "randomx", "points", "Upstream", "rotate-1"):
        with pytest.raises(DataError, match=f"unknown annotation assignment '{bad}'"):
            resolve_assignment(bad, m)
