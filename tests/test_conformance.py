"""Conformance suite: every discovered method plugin (a user's new file in methods/ too) must pass."""
import math

import numpy as np
import pandas as pd
import pytest

from fedicra import record
from fedicra.fl import protocol
from fedicra.fl.registry import build_method, load_methods
from fedicra.fl.runner import run_experiment
from fedicra.fl.setup import client_keys, load_manifest, make_client
from helpers import assert_nothing_but_model_leaves, run_recorded, tiny_config

METHODS = sorted(load_methods())


def config_image_shape(clients):
    site = next(iter(clients.values())).data[0]
    return tuple(np.asarray(site.test[0]["label"]).shape)


@pytest.mark.parametrize("name", METHODS)
def test_method_conforms(name, tiny_faz, tmp_path):
    config = tiny_config(tiny_faz, method=name)
    summary, transport, clients = run_recorded(config, tmp_path / "a")

    # 1. It ran: per-case test scores for every held site, finite numbers everywhere.
    cases = pd.read_csv(tmp_path / "a" / "cases.csv")
    assert set(cases["site"]) == {0, 1}
    assert {"personalized"} <= set(cases["model"])
    scores = cases.filter(regex="^(dice|hd95|assd|jaccard)_")
    assert scores.notna().all().all() and scores.map(math.isfinite).all().all()
    rounds = pd.read_csv(tmp_path / "a" / "rounds.csv")
    assert rounds.select_dtypes("number").map(lambda v: not math.isinf(v)).all().all()
    assert summary["rounds"] == 2

    # 2. Personal entries never leave a client: inspect the real reply records.
    method = next(iter(clients.values())).method
    personal = {n for c in clients.values() for n in c.model.state_dict() if method.is_personal(n)}
    # A global model is scored exactly when the method has one: declared, or nothing personal (an
    # all-personal method must not score the server's untrained copy).
    expected = method.has_global_model if method.has_global_model is not None else not personal
    assert method.global_model_available() == expected
    assert ("global" in set(cases["model"])) == expected
    assert transport.received, "no reply was recorded"
    for _, site, reply in transport.received:
        size = config_image_shape(clients)
        assert_nothing_but_model_leaves(reply, next(iter(clients.values())).model.state_dict(), size,
                                        f"{name}: site {site}")
        for key in ("arrays", "extras"):
            leaked = personal & set(reply.get(key, {}).keys()) if key in reply else set()
            assert not leaked, f"{name}: site {site} sent personal entries {sorted(leaked)[:3]} in {key}"
        if "arrays" in reply:
            for value in protocol.from_record(reply["arrays"]).values():
                assert value.isfinite().all() if value.is_floating_point() else True

    # 3. Each site wrote its own qualitative sample locally; the run record is valid.
    samples = record.read_samples(tmp_path / "a")
    assert {s["site"] for s in samples} == {0, 1} and samples[0]["prediction"].shape == size
    record.check(tmp_path / "a")

    # 4. Same seed, same numbers.
    run_experiment(config, tmp_path / "b")
    again = pd.read_csv(tmp_path / "b" / "cases.csv")
    pd.testing.assert_frame_equal(cases, again)


def test_fedavg_on_one_site_equals_local_training(tiny_faz, tmp_path):
    """With a single site, averaging is the identity: FedAvg must reproduce local training exactly."""
    results = {}
    for name in ("fedavg", "local"):
        config = tiny_config(tiny_faz, method=name, sites=[0], rounds=3, local_steps=2)
        run_experiment(config, tmp_path / name)
        cases = pd.read_csv(tmp_path / name / "cases.csv")
        results[name] = cases[(cases["model"] == "personalized")].drop(columns=["round"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(results["fedavg"], results["local"], check_exact=False, rtol=1e-6)


@pytest.mark.parametrize("name", METHODS)
def test_method_keeps_the_gradient_budget(name, tiny_faz, tmp_path):
    """Every site takes exactly the declared gradient steps (rounds x local steps x `budget`); a plugin
    that takes more without declaring it fails here. The run records the steps and the resolved values."""
    import json

    config = tiny_config(tiny_faz, method=name)
    summary = run_experiment(config, tmp_path / "run")
    method = build_method(config)
    budget = method.gradient_budget(config)
    assert budget == round(method.budget * config["rounds"] * config["local_steps"])
    steps = summary["gradient_steps"]
    assert steps and all(n == budget for n in steps.values()), f"{name}: {steps} gradient steps, budget {budget}"
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]
    assert recorded["gradient_steps_per_site"] == budget
    assert recorded["method_params"] == method.resolved
    assert recorded["objective"] == "+".join(method.objective_terms)
