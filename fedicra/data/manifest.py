"""Dataset manifest: which task, how many classes and channels, and the sites with their default labels.

A dataset folder holds `dataset.json` (written by our generators and importers). Upstream's released
folders (`Domain1..K`) have none; `Manifest.load(root, task=...)` then infers the sites from the folder
names and takes classes, channels and the per-site sparse label map from the task preset.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from fedicra.data.errors import DataError

MANIFEST_FILE = "dataset.json"
LABEL_KINDS = ("scribble", "scribble_noisy", "keypoint", "block", "box")
FULL_LABEL = "mask"
_SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DOMAIN = re.compile(r"^Domain(\d+)$")


@dataclass(frozen=True)
class TaskPreset:
    """What a task fixes: classes, channels, native size, scored structures, upstream defaults."""

    name: str
    num_classes: int
    in_channels: int
    img_size: int
    structures: dict[str, tuple[int, ...]]
    default_labels: tuple[str, ...]  # upstream sparse label per site, Domain1 first
    image_fill: float  # image value that fills corners after a rotation (upstream: 0.8 for FAZ)


TASKS: dict[str, TaskPreset] = {
    "faz": TaskPreset(
        name="faz",
        num_classes=2,
        in_channels=1,
        img_size=256,
        structures={"faz": (1,)},
        default_labels=("scribble_noisy", "keypoint", "block", "box", "scribble"),
        image_fill=0.8,
    ),
    "odoc": TaskPreset(
        name="odoc",
        num_classes=3,
        in_channels=3,
        img_size=384,
        structures={"cup": (1,), "disc": (1, 2)},
        default_labels=("scribble", "scribble_noisy", "scribble_noisy", "keypoint", "block"),
        image_fill=0.0,
    ),
}


def get_task(name: str) -> TaskPreset:
    if name not in TASKS:
        raise DataError(f"unknown task {name!r}: expected one of {', '.join(TASKS)}")
    return TASKS[name]


def check_label_kind(kind: str, where: str, allow_mask: bool = True) -> str:
    allowed = LABEL_KINDS + ((FULL_LABEL,) if allow_mask else ())
    if kind not in allowed:
        raise DataError(f"{where}: unknown label kind {kind!r}: expected one of {', '.join(allowed)}")
    return kind


@dataclass(frozen=True)
class Site:
    name: str  # folder name under the dataset root, e.g. Domain1
    label: str  # default sparse label kind used for training


@dataclass
class Manifest:
    name: str
    task: str
    num_classes: int
    in_channels: int
    img_size: int
    sites: list[Site]
    structures: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self):
        where = f"manifest {self.name!r}"
        get_task(self.task)
        if not self.sites:
            raise DataError(f"{where}: no sites")
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise DataError(f"{where}: duplicate site names {names}")
        for site in self.sites:
            if not _SITE_NAME.match(site.name):
                raise DataError(f"{where}: site name {site.name!r} is not a plain folder name")
            check_label_kind(site.label, f"{where}, site {site.name}", allow_mask=True)
        for key in ("num_classes", "in_channels", "img_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise DataError(f"{where}: {key} must be a positive integer, got {value!r}")
        if self.num_classes < 2:
            raise DataError(f"{where}: num_classes must be at least 2, got {self.num_classes}")
        if not self.structures:
            self.structures = dict(TASKS[self.task].structures)
        self.structures = {str(k): tuple(int(c) for c in v) for k, v in self.structures.items()}
        for key, classes in self.structures.items():
            if not classes or any(c < 1 or c >= self.num_classes for c in classes):
                raise DataError(f"{where}: structure {key!r} uses classes {classes} outside 1..{self.num_classes - 1}")

    # --- conveniences -------------------------------------------------------------------------
    @property
    def unlabeled(self) -> int:
        """Label value of unlabeled pixels in sparse maps (= CE ignore index)."""
        return self.num_classes

    @property
    def site_names(self) -> list[str]:
        return [s.name for s in self.sites]

    @property
    def default_labels(self) -> list[str]:
        return [s.label for s in self.sites]

    @property
    def preset(self) -> TaskPreset:
        return TASKS[self.task]

    def site_index(self, site: int | str) -> int:
        """Accept a 0-based index or a site folder name."""
        if isinstance(site, str) and not site.isdigit():
            if site not in self.site_names:
                raise DataError(f"unknown site {site!r}: dataset {self.name!r} has {', '.join(self.site_names)}")
            return self.site_names.index(site)
        index = int(site)
        if not 0 <= index < len(self.sites):
            raise DataError(f"site index {index} out of range: dataset {self.name!r} has {len(self.sites)} sites")
        return index

    # --- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "task": self.task,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "img_size": self.img_size,
            "sites": [{"name": s.name, "label": s.label} for s in self.sites],
            "structures": {k: list(v) for k, v in self.structures.items()},
        }

    @classmethod
    def from_dict(cls, data: dict, where: str) -> "Manifest":
        try:
            return cls(
                name=str(data["name"]),
                task=str(data["task"]),
                num_classes=data["num_classes"],
                in_channels=data["in_channels"],
                img_size=data["img_size"],
                sites=[Site(str(s["name"]), str(s["label"])) for s in data["sites"]],
                structures=data.get("structures") or {},
            )
        except (KeyError, TypeError) as err:
            raise DataError(f"{where}: malformed manifest (missing or bad field {err})") from None

    @classmethod
    def for_task(cls, task: str, name: str, site_names: list[str], img_size: int | None = None,
                 labels: list[str] | None = None) -> "Manifest":
        """A manifest with the task preset's classes/channels and its upstream label map (cycled)."""
        preset = get_task(task)
        if labels is None:
            labels = [preset.default_labels[i % len(preset.default_labels)] for i in range(len(site_names))]
        return cls(
            name=name,
            task=task,
            num_classes=preset.num_classes,
            in_channels=preset.in_channels,
            img_size=img_size or preset.img_size,
            sites=[Site(n, lab) for n, lab in zip(site_names, labels)],
            structures=dict(preset.structures),
        )

    @classmethod
    def load(cls, root: str | os.PathLike, task: str | None = None) -> "Manifest":
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: dataset folder does not exist")
        path = root / MANIFEST_FILE
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise DataError(f"{path}: cannot read manifest: {err}") from None
            if not isinstance(data, dict):
                raise DataError(f"{path}: malformed manifest (expected a JSON object)")
            manifest = cls.from_dict(data, str(path))
            if task is not None and task != manifest.task:
                raise DataError(f"{path}: dataset task is {manifest.task!r}, but --task {task!r} was given")
            return manifest
        return cls.infer(root, task)

    @classmethod
    def infer(cls, root: Path, task: str | None) -> "Manifest":
        """Upstream folders: sites are `Domain<k>` sorted by k; size is read from the first case."""
        if task is None:
            raise DataError(f"{root}: no {MANIFEST_FILE}; give the task (--task faz|odoc) to read upstream folders")
        domains = sorted(
            (int(m.group(1)), p.name) for p in root.iterdir() if p.is_dir() and (m := _DOMAIN.match(p.name))
        )
        if not domains:
            raise DataError(f"{root}: no {MANIFEST_FILE} and no Domain<k> site folders")
        names = [name for _, name in domains]
        return cls.for_task(task, root.resolve().name, names, img_size=_first_image_size(root, names))

    def save(self, root: str | os.PathLike) -> Path:
        path = Path(root) / MANIFEST_FILE
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def _first_image_size(root: Path, site_names: list[str]) -> int | None:
    import h5py

    for name in site_names:
        for case in sorted((root / name / "train").glob("*.h5")):
            try:
                with h5py.File(case, "r") as f:
                    return int(f["image"].shape[-1])
            except (OSError, KeyError):
                return None  # the layout check reports the broken file precisely
    return None


def write_text_atomic(path: Path, text: str) -> None:
    from fedicra.atomic import atomic_write

    atomic_write(path, text)
