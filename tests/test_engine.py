"""Engine behaviour: resume after SIGKILL, failing and hanging sites, overrides and errors."""
import os
import signal
import subprocess
import sys
import time

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


def test_resume_refuses_a_different_config(tiny_faz, tmp_path):
    from fedicra.fl.runner import run_experiment

    run_experiment(tiny_config(tiny_faz, rounds=1), tmp_path)
    with pytest.raises(UserError, match="different configuration"):
        run_experiment(tiny_config(tiny_faz, rounds=1, lr=0.5), tmp_path)
