"""Engine behaviour: resume after SIGKILL, failing and hanging sites, overrides and errors."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fedicra.errors import UserError
from fedicra.fl.backends.inprocess import InProcessTransport
from fedicra.fl.config import load_config
from fedicra.fl.registry import get_method
from fedicra.fl.server import Federation, RunError
from fedicra.fl.setup import client_keys, load_manifest, make_client
from helpers import tiny_config


def _cli(args, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "fedicra", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tiny_faz, tmp_path):
    config = {"dataset": str(tiny_faz), "method": "fedbn", "sites": [0, 1], "rounds": 6, "local_steps": 3,
              "batch_size": 2, "progress": False, "seed": 3, "checkpoint_every": 1}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    reference = _cli(["run", "-c", str(path), "-o", str(tmp_path / "ref")])
    assert reference.wait(timeout=300) == 0, reference.stdout.read()

    victim = _cli(["run", "-c", str(path), "-o", str(tmp_path / "killed")])
    checkpoint = tmp_path / "killed" / "checkpoints" / "federation.pt"
    deadline = time.time() + 240
    while time.time() < deadline:
        rounds = tmp_path / "killed" / "rounds.csv"
        if checkpoint.exists() and rounds.exists() and (pd.read_csv(rounds)["round"] >= 2).any():
            break
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "killed" / "summary.json").exists(), "killed too late to test resume"

    resumed = _cli(["run", "-c", str(path), "-o", str(tmp_path / "killed")])
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    assert "resuming" in output
    expected = pd.read_csv(tmp_path / "ref" / "cases.csv")
    actual = pd.read_csv(tmp_path / "killed" / "cases.csv")
    pd.testing.assert_frame_equal(expected, actual)
    val = lambda d: pd.read_csv(d / "rounds.csv").query("site >= 0")[["round", "site", "mean_dice"]]
    pd.testing.assert_frame_equal(val(tmp_path / "ref").reset_index(drop=True),
                                  val(tmp_path / "killed").reset_index(drop=True))


class Boom(RuntimeError):
    pass


def _federation(config, tmp_path, fault):
    """A FedAvg run whose site 1 misbehaves in round 2 (`fault` is 'raise' or 'hang')."""
    base = get_method("fedavg")

    class Faulty(base):
        name = "faulty-test-only"

        def train_round(self, client, cfg):
            if client.key == 1 and cfg["round"] == 2:
                if fault == "hang":
                    time.sleep(3)   # past the 1 s timeout; then end without touching shared state
                raise Boom("deliberate failure")
            return super().train_round(client, cfg)

    method = Faulty({}, faithful=False)
    manifest = load_manifest(config)
    keys = client_keys(config, manifest, method)
    clients = {k: make_client(config, method, k, manifest) for k in keys}
    transport = InProcessTransport(clients, timeout=config["client_timeout"])
    return Federation(config, method, manifest, keys, transport, tmp_path)


@pytest.mark.parametrize("fault", ["raise", "hang"])
def test_failing_site_stops_run_with_site_and_round(tiny_faz, tmp_path, fault):
    config = tiny_config(tiny_faz, rounds=3, client_timeout=1.0 if fault == "hang" else None, checkpoint_every=1)
    with pytest.raises(RunError) as info:
        _federation(config, tmp_path, fault).run()
    message = str(info.value)
    assert "site 1 failed in round 2" in message and "\n" not in message
    assert ("Boom" in message) if fault == "raise" else ("TimeoutError" in message)
    # What was written before the failure stays intact and readable.
    rounds = pd.read_csv(tmp_path / "rounds.csv")
    assert rounds["round"].max() == 1
    assert (tmp_path / "checkpoints" / "federation.pt").exists()
    assert not (tmp_path / "summary.json").exists()


def test_failing_site_is_dropped_when_allowed(tiny_faz, tmp_path, capsys):
    config = tiny_config(tiny_faz, rounds=3, allow_failures=True)
    summary = _federation(config, tmp_path, "raise").run()
    assert summary["rounds"] == 3
    assert "site 1 failed in round 2" in capsys.readouterr().out
    assert set(pd.read_csv(tmp_path / "cases.csv")["site"]) == {0, 1}


def test_config_errors_are_one_line(tiny_faz, tmp_path):
    from fedicra.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: x\nmethod: fedavg\nrounds: zero\n")
    with pytest.raises(UserError, match=r"option rounds: 'zero' is not of type 'integer'"):
        load_config(bad)
    assert main(["run", "-c", str(tmp_path / "missing.yaml"), "-o", str(tmp_path / "o")]) == 2
    assert main(["run", "-o", str(tmp_path / "o"), "--set", f"dataset={tiny_faz}", "--set", "method=nope"]) == 2
    assert main(["run", "-o", str(tmp_path / "o"), "--set", f"dataset={tiny_faz}", "--set", "method=fedprox",
                 "--set", "method_params.mu=high"]) == 2
    assert not (tmp_path / "o" / "summary.json").exists()


def _files(root):
    return {p.relative_to(root): (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_resume_refuses_a_different_config_and_leaves_the_record_whole(tiny_faz, tmp_path):
    from fedicra.fl.runner import run_experiment

    run_experiment(tiny_config(tiny_faz, rounds=1, checkpoint_every=1), tmp_path)
    before = _files(tmp_path)
    with pytest.raises(UserError, match="different configuration"):
        run_experiment(tiny_config(tiny_faz, rounds=1, lr=0.5, checkpoint_every=1), tmp_path)
    (tmp_path / "summary.json").unlink()   # interrupted before the end: the checkpoint check refuses it
    del before[Path("summary.json")]
    with pytest.raises(UserError, match="different configuration"):
        run_experiment(tiny_config(tiny_faz, rounds=1, lr=0.5, checkpoint_every=1), tmp_path)
    assert _files(tmp_path) == before, "a refused resume touched the run directory (config.json?)"


def test_a_copied_run_folder_is_not_resumed_silently(tiny_faz, tmp_path, monkeypatch, capsys):
    import shutil

    from fedicra.fl.runner import run_experiment

    reference = run_experiment(tiny_config(tiny_faz, rounds=2, checkpoint_every=1), tmp_path / "here")
    cases = (tmp_path / "here" / "cases.csv").read_bytes()
    (tmp_path / "here" / "summary.json").unlink()   # interrupted before the end, then copied elsewhere
    shutil.copytree(tmp_path / "here", tmp_path / "copy")
    before = _files(tmp_path / "copy")
    with pytest.raises(UserError, match=r"written in .*here on host .*not in .*copy: a copied or moved run") as err:
        run_experiment(tiny_config(tiny_faz, rounds=2, checkpoint_every=1), tmp_path / "copy")
    assert "\n" not in str(err.value) and "resume_moved=true" in str(err.value)
    assert _files(tmp_path / "copy") == before, "a refused resume touched the copied folder"
    # adopted on purpose: it resumes and ends with the same numbers, saying where the rounds ran
    capsys.readouterr()
    adopted = run_experiment(tiny_config(tiny_faz, rounds=2, checkpoint_every=1, resume_moved=True), tmp_path / "copy")
    assert "warning:" in capsys.readouterr().err
    assert adopted["num_cases"] == reference["num_cases"] and (tmp_path / "copy" / "cases.csv").read_bytes() == cases
    # the same folder seen from another host (a shared filesystem): resumed, with a warning
    (tmp_path / "here" / "summary.json").unlink(missing_ok=True)
    monkeypatch.setattr("socket.gethostname", lambda: "another-node")
    run_experiment(tiny_config(tiny_faz, rounds=2, checkpoint_every=1), tmp_path / "here")
    assert "on host" in capsys.readouterr().err and (tmp_path / "here" / "summary.json").is_file()


def test_a_complete_run_reinvoked_says_so_and_rewrites_nothing(tiny_faz, tmp_path, capsys):
    from fedicra.cli import main

    args = ["run", "-o", str(tmp_path / "run"), *(f"--set={k}={v}" for k, v in (
        ("dataset", tiny_faz), ("method", "fedavg"), ("sites", "[0, 1]"), ("rounds", 1), ("local_steps", 1),
        ("batch_size", 2), ("progress", "false")))]
    assert main(args) == 0
    before = _files(tmp_path / "run")
    capsys.readouterr()
    assert main(args) == 0
    assert "already complete" in capsys.readouterr().out
    assert _files(tmp_path / "run") == before


def test_stale_temporaries_go_and_outputs_follow_the_umask(tiny_faz, tmp_path):
    import os

    from fedicra.fl.runner import run_experiment

    stale = tmp_path / "checkpoints" / ".federation.pt.k3j2.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x" * 1000)   # what a writer killed mid-checkpoint leaves
    old = os.umask(0o022)
    try:
        run_experiment(tiny_config(tiny_faz, rounds=1, local_steps=1, checkpoint_every=1), tmp_path)
    finally:
        os.umask(old)
    assert not stale.exists()
    for name in ("config.json", "summary.json", "cases.csv", "checkpoints/federation.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_a_second_run_on_the_same_out_fails_in_one_line(tiny_faz, tmp_path):
    """Two processes: a run holding the folder's lock, and a second `fedicra run` on the same --out."""
    config = {"dataset": str(tiny_faz), "method": "fedavg", "sites": [0, 1], "rounds": 30, "local_steps": 2,
              "batch_size": 2, "progress": False}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    first = _cli(["run", "-c", str(path), "-o", str(tmp_path / "out")])
    try:
        deadline = time.time() + 120
        while not (tmp_path / "out" / "config.json").exists() and time.time() < deadline:
            time.sleep(0.05)
        second = _cli(["run", "-c", str(path), "-o", str(tmp_path / "out")])
        output = second.communicate(timeout=120)[0]
    finally:
        first.kill()
        first.wait()
    lines = [line for line in output.splitlines() if line.strip()]
    assert second.returncode == 2 and len(lines) == 1, output
    assert "another fedicra run is writing this run directory" in lines[0]


def test_val_fraction_zero_and_one_training_case_per_site_finish(tmp_path):
    from fedicra.data.synth import synthesize
    from fedicra.fl.runner import run_experiment

    root = tmp_path / "one"
    synthesize("faz", root, size=32, seed=0, cases=1)   # 16 px: a 1x1 bottleneck, BatchNorm needs batch > 1
    for fraction in (0.0, 0.2):   # 0.2 of one case is no case either: `last` is the only selection
        out = tmp_path / f"run{fraction}"
        summary = run_experiment(tiny_config(root, rounds=2, local_steps=1, val_fraction=fraction), out)
        cases = pd.read_csv(out / "cases.csv")
        assert set(cases["selection"]) == {"last"} and set(cases["site"]) == {0, 1}
        if fraction == 0.0:
            assert summary["protocol"]["selection"] == ["last"]
            assert "none (val_fraction 0)" in summary["protocol"]["validation"]


def test_named_random_streams_are_independent_and_repeatable(tiny_faz):
    import numpy as np

    from fedicra.seeding import Stream, stream

    draws = {name: stream(3, name, 1, 0).integers(2**32, size=4).tolist() for name in Stream}
    assert len({tuple(v) for v in draws.values()}) == len(Stream)
    assert stream(3, Stream.ALA, 1, 0).integers(2**32, size=4).tolist() == draws[Stream.ALA]
    client = make_client(tiny_config(tiny_faz), get_method("fedavg")({}), 0)
    training = client.batch(0)["image"]
    assert not np.array_equal(client.batch(0, phase=Stream.ALA)["image"].numpy(), training.numpy())
    assert np.array_equal(client.batch(0)["image"].numpy(), training.numpy())
