"""Every bad input is one line: `fedicra.cli.main` returns 2, prints one `error:` line naming the
option or file, and leaves nothing half-written (no file under the probe's folder is created or
changed, except an empty run directory's lock). One row per probe of issue 11."""
import contextlib
import errno
import hashlib
import struct
import tempfile
import zlib
from pathlib import Path

import pytest
import torch
import yaml

from fedicra.cli import main


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _run_yaml(tmp, data, extra: str = "") -> str:
    return str(_write(tmp / "run.yaml", f"dataset: {data}\nmethod: fedavg\nsites: [0, 1]\nrounds: 1\n"
                                        f"local_steps: 1\nbatch_size: 2\nprogress: false\n{extra}"))


def _run(tmp, data, *sets, extra=""):
    return ["run", "-c", _run_yaml(tmp, data, extra), "-o", str(tmp / "out"), *[f"--set={s}" for s in sets]]


def _checkpoint(tmp, data, payload: bytes):
    _write(tmp / "out" / "checkpoints" / "federation.pt", "")
    (tmp / "out" / "checkpoints" / "federation.pt").write_bytes(payload)
    return _run(tmp, data)


class Payload:
    """Unpickling this creates the file it names: a checkpoint that would run code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _crafted(tmp, data):
    import io

    buffer = io.BytesIO()
    torch.save({"round": 1, "config": {}, "x": Payload(tmp / "PWNED")}, buffer)
    return _checkpoint(tmp, data, buffer.getvalue())


def _png_header(width, height) -> bytes:
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def _pngs(tmp, image_size=(24, 24), mask_size=(24, 24), big=False):
    from PIL import Image

    for folder, size, value in (("images", image_size, 200), ("masks", mask_size, 1)):
        (tmp / folder).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            Image.new("L", size, value).save(tmp / folder / f"c{i}.png")
    if big:
        (tmp / "images" / "c0.png").write_bytes(_png_header(20000, 20000))
    return ["data", "import", "--images", str(tmp / "images"), "--masks", str(tmp / "masks"), "--task", "faz",
            "--size", "16", "--out", str(tmp / "imported")]


def _locked(tmp, data, stack):
    from fedicra.fl.run_lock import locked_run_dir

    stack.enter_context(locked_run_dir(tmp / "out"))   # a first run holds the folder
    return _run(tmp, data)


def _read_only(monkeypatch):
    def refuse(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(dir))
    monkeypatch.setattr(tempfile, "mkstemp", refuse)


def _disk_full(monkeypatch):
    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))
    monkeypatch.setattr(Path, "write_bytes", full)


# (id, argv builder (tmp, data, stack) -> argv, substring of the one line, optional patch)
PROBES = [
    ("nan-lr-yaml", lambda t, d, s: _run(t, d, extra="lr: .nan\n"), "option lr: must be a finite number", None),
    ("inf-lr-set", lambda t, d, s: _run(t, d, "lr=.inf"), "option lr: must be a finite number", None),
    ("negative-timeout", lambda t, d, s: _run(t, d, "client_timeout=-5"), "option client_timeout", None),
    ("duplicate-sites", lambda t, d, s: _run(t, d, "sites=[0, 0]"), "option sites", None),
    ("unknown-simulation-key", lambda t, d, s: _run(t, d, "simulation.gpus=1"), "option simulation", None),
    ("duplicate-yaml-key", lambda t, d, s: _run(t, d, extra="rounds: 2\n"), "duplicate key 'rounds'", None),
    ("device-banana", lambda t, d, s: _run(t, d, "device=banana"), "option device", None),
    ("device-cuda-absent", lambda t, d, s: _run(t, d, "device=cuda:99"), "option device: cuda:99", None),
    ("unknown-method", lambda t, d, s: _run(t, d, "method=fedsgd"), "method 'fedsgd' is unknown", None),
    ("unknown-method-param", lambda t, d, s: _run(t, d, "method_params.mu=1"), "no parameter 'mu'", None),
    ("bad-assignment", lambda t, d, s: _run(t, d, "assignment=sideways"), "option assignment", None),
    ("out-under-a-file", lambda t, d, s: _run(t, d) [:-1] + [str(_write(t / "file", "x") / "run")],
     "file", None),
    ("read-only-out", lambda t, d, s: _run(t, d), "Read-only file system", _read_only),
    ("disk-full", lambda t, d, s: _run(t, d), "No space left on device", _disk_full),
    ("empty-checkpoint", lambda t, d, s: _checkpoint(t, d, b""), "federation.pt: cannot resume from this file", None),
    ("garbage-checkpoint", lambda t, d, s: _checkpoint(t, d, b"not a checkpoint" * 64),
     "federation.pt: cannot resume from this file", None),
    ("truncated-checkpoint", lambda t, d, s: _checkpoint(t, d, _saved_checkpoint()[:300]),
     "federation.pt: cannot resume from this file", None),
    ("crafted-checkpoint", lambda t, d, s: _crafted(t, d), "federation.pt: cannot resume from this file", None),
    ("second-run-same-out", lambda t, d, s: _locked(t, d, s), "another fedicra run is writing", None),
    ("png-20000px", lambda t, d, s: _pngs(t, big=True), "c0.png", None),
    ("mask-size-differs", lambda t, d, s: _pngs(t, mask_size=(20, 24)), "mask is 20x24 pixels", None),
    ("synth-size-100000", lambda t, d, s: ["data", "synth", "--task", "faz", "--size", "100000", "--out",
                                           str(t / "synth")], "--size 100000", None),
    ("force-on-non-dataset", lambda t, d, s: ["data", "synth", "--task", "faz", "--size", "16", "--cases", "2",
                                              "--force", "--out", str(_write(t / "mine" / "notes.txt", "x").parent)],
     "--force replaces only a dataset folder", None),
    ("report-bad-model", lambda t, d, s: ["report", "all", str(t), "--out", str(t / "rep"), "--model", "banana"],
     "report model", None),
    ("report-bad-selection", lambda t, d, s: ["report", "all", str(t), "--out", str(t / "rep"), "--selection", "x"],
     "report selection", None),
    ("report-bad-alpha", lambda t, d, s: ["report", "all", str(t), "--out", str(t / "rep"), "--alpha", "2"],
     "report alpha", None),
]


@pytest.fixture(scope="module")
def saved_checkpoint_bytes(tmp_path_factory, tiny_faz):
    from fedicra.fl.runner import run_experiment
    from helpers import tiny_config

    out = tmp_path_factory.mktemp("ckpt")
    run_experiment(tiny_config(tiny_faz, rounds=1, local_steps=1, checkpoint_every=1), out)
    return (out / "checkpoints" / "federation.pt").read_bytes()


_SAVED: list[bytes] = []


def _saved_checkpoint() -> bytes:
    return _SAVED[0]


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("probe, build, expected, patch", PROBES, ids=[p[0] for p in PROBES])
def test_bad_input_is_one_line_exit_2_and_nothing_half_written(probe, build, expected, patch, tmp_path, tiny_faz,
                                                               saved_checkpoint_bytes, capsys, monkeypatch):
    _SAVED[:] = [saved_checkpoint_bytes]
    with contextlib.ExitStack() as stack:
        argv = build(tmp_path, tiny_faz, stack)
        before = _tree(tmp_path)
        if patch:
            patch(monkeypatch)
        code = main(argv)
        monkeypatch.undo()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (probe, err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (probe, lines)
    assert _tree(tmp_path) == before, f"{probe}: files were written or changed"
    assert not (tmp_path / "PWNED").exists(), "the crafted checkpoint ran its payload"


def test_the_crafted_payload_is_real(tmp_path):
    """The crafted-checkpoint probe can fail: the unsafe loader does run its payload."""
    import io

    buffer = io.BytesIO()
    torch.save({"x": Payload(tmp_path / "ran")}, buffer)
    buffer.seek(0)
    torch.load(buffer, weights_only=False)
    assert (tmp_path / "ran").exists()


def test_scientific_notation_is_a_number_in_yaml_and_set(tmp_path):
    from fedicra.fl.config import load_config

    path = _write(tmp_path / "c.yaml", "dataset: x\nmethod: fedavg\nlr: 1e-3\nweight_decay: 5E-4\n")
    config = load_config(path, ["lr_power=9e-1"])
    assert config["lr"] == 1e-3 and config["weight_decay"] == 5e-4 and config["lr_power"] == 0.9
    assert yaml.safe_load("lr: 1e-3")["lr"] == "1e-3"  # what plain YAML 1.1 would have given
