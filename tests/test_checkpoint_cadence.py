"""Checkpoint cadence: `auto` keeps checkpoint writes under 2 % of the round loop, and a run resumed
from whichever round its last checkpoint holds ends with the same numbers as an uninterrupted one."""
import json

import pandas as pd
import pytest

from fedicra.errors import UserError
from fedicra.fl import cadence
from fedicra.fl.backends.inprocess import InProcessTransport
from fedicra.fl.cadence import CheckpointCadence
from fedicra.fl.registry import build_method
from fedicra.fl.server import Federation
from fedicra.fl.setup import client_keys, load_manifest, make_client
from helpers import tiny_config


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _simulate(every, rounds, round_s, write_s):
    """Rounds of `round_s` seconds, writes of `write_s` seconds: which rounds were written, and the share."""
    clock = FakeClock()
    policy = CheckpointCadence(every, clock=clock)
    written = []

    def save():
        clock.now += write_s

    for round_ in range(1, rounds + 1):
        clock.now += round_s
        if policy.due(round_, rounds):
            policy.write(save)
            written.append(round_)
    return written, policy.total_cost / clock.now


def test_fixed_cadence_writes_every_nth_and_the_last_round():
    written, _ = _simulate(3, 10, 1.0, 0.5)
    assert written == [3, 6, 9, 10]


@pytest.mark.parametrize("round_s, write_s", [(1.7, 0.19), (0.5, 0.2), (30.0, 0.2), (5.0, 3.0)])
def test_auto_cadence_costs_under_two_percent_of_a_long_run(round_s, write_s):
    rounds = 3000
    written, share = _simulate("auto", rounds, round_s, write_s)
    assert share < 0.02
    assert len(written) > 1
    # no more than max(a minute, 100 x the write cost) of rounds is ever left unsaved
    gaps = [b - a for a, b in zip([0] + written, written)]
    assert max(gaps[:-1]) * round_s <= max(cadence.MIN_INTERVAL_S, write_s / cadence.BUDGET) + round_s


def test_auto_cadence_writes_no_checkpoint_in_a_run_under_a_minute():
    written, _ = _simulate("auto", 10, 1.7, 0.19)   # the 17.5 s default-scale run
    assert written == []
    written, _ = _simulate("auto", 50, 1.7, 0.19)   # 85 s: once a minute of rounds has passed
    assert written == [36]


def test_checkpoint_every_accepts_auto_or_a_positive_integer(tiny_faz):
    assert tiny_config(tiny_faz)["checkpoint_every"] == "auto"
    assert tiny_config(tiny_faz, checkpoint_every=4)["checkpoint_every"] == 4
    for bad in ("often", 0):
        with pytest.raises(UserError, match="checkpoint_every"):
            tiny_config(tiny_faz, checkpoint_every=bad)


class Crash(RuntimeError):
    pass


class CrashingTransport(InProcessTransport):
    """Dies in `crash_round`, as a killed process would (the exception escapes the round loop)."""

    crash_round = None

    def send(self, round_, requests):
        if round_ == self.crash_round:
            raise Crash(f"crash in round {round_}")
        return super().send(round_, requests)


def _federation(config, run_dir, crash_round=None):
    method = build_method(config)
    manifest = load_manifest(config)
    keys = client_keys(config, manifest, method)
    transport = CrashingTransport({k: make_client(config, method, k, manifest) for k in keys})
    transport.crash_round = crash_round
    return Federation(config, method, manifest, keys, transport, run_dir)


@pytest.mark.parametrize("every, crash_round", [(2, 4), ("auto", None), (4, None)])
def test_resume_from_the_last_checkpoint_is_bit_identical(tiny_faz, tmp_path, every, crash_round):
    config = tiny_config(tiny_faz, method="fedbn", rounds=4, local_steps=2, checkpoint_every=every, seed=2)
    reference = _federation(config, tmp_path / "ref")
    summary = reference.run()
    writes = {2: 2, 4: 1, "auto": 0}[every]   # rounds 2 and 4 / the last / none (a run under a minute)
    assert reference.cadence.writes == writes and (summary["checkpoint_wall_clock_s"] > 0) == (writes > 0)
    run_dir = tmp_path / "crashed"
    if crash_round is not None:   # dies in round 4: the checkpoint holds round 2
        with pytest.raises(Crash):
            _federation(config, run_dir, crash_round).run()
        assert not (run_dir / "summary.json").exists()
    else:                         # dies in the final evaluation
        with pytest.raises(Crash):
            _federation(config, run_dir, crash_round=config["rounds"] + 1).run()
    resumed = _federation(config, run_dir)
    resumed.run()
    assert resumed.server.round == 4
    # rounds 3-4 again / no round again (the last round was written) / every round again (none was)
    assert resumed.cadence.writes == {2: 1, 4: 0, "auto": 0}[every]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "ref" / "cases.csv"), pd.read_csv(run_dir / "cases.csv"))
    validation = lambda d: pd.read_csv(d / "rounds.csv").query("site >= 0")[["round", "site", "mean_dice"]]
    pd.testing.assert_frame_equal(validation(tmp_path / "ref").reset_index(drop=True),
                                  validation(run_dir).reset_index(drop=True))
    assert json.loads((run_dir / "config.json").read_text())["checkpoint_every"] == every
