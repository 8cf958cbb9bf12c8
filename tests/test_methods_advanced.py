"""Advanced baselines (FedALA, FedAP, MetaFed, Ditto, FedLC) and the reusable ALA component.

Tiny synthetic FAZ data (32 px, 5 training cases per site, 2 sites), 2 rounds of 2 local steps.
"""
import copy
import io
import math

import pandas as pd
import pytest
import torch

from fedicra.errors import UserError
from fedicra.fl.ala import AdaptiveAggregation, decoder_mixed
from fedicra.fl.config import load_config
from fedicra.fl.registry import build_method, load_methods
from fedicra.fl.runner import run_experiment
from fedicra.fl.server import Reply, ServerState
from fedicra.fl.setup import make_client
from fedicra.seeding import Stream

ADVANCED = {
    "fedala": {"skip_iters": 0, "max_start_epochs": 2, "window": 1},
    "fedap": {"pretrain_steps": 2},
    "metafed": {"common_rounds": 1, "distill_after_rounds": 0},
    "ditto": {},
    "fedlc": {"rep_iters": 1},
}


@pytest.fixture(scope="session")
def faz_root(tmp_path_factory):
    from fedicra.data.synth import synthesize

    root = tmp_path_factory.mktemp("advanced") / "faz32"
    synthesize("faz", root, size=32, seed=0, cases=5)
    return root


def config_for(root, method, faithful=False, **overrides):
    base = dict(dataset=str(root), method=method, sites=[0, 1], rounds=2, local_steps=2, batch_size=4,
                progress=False, method_params=ADVANCED.get(method, {}), faithful=faithful)
    base.update(overrides)
    return load_config(base=base)


def client_for(root, method, key=0, faithful=False, **overrides):
    config = config_for(root, method, faithful=faithful, **overrides)
    method_obj = build_method(config)
    return make_client(config, method_obj, key), method_obj


# ---------------------------------------------------------------------- end to end
@pytest.mark.parametrize("method,faithful", [("fedala", False), ("fedap", False), ("metafed", False),
                                             ("ditto", False), ("fedlc", False), ("fedlc", True)])
def test_method_runs_end_to_end(faz_root, tmp_path, method, faithful):
    assert method in load_methods()
    summary = run_experiment(config_for(faz_root, method, faithful=faithful), tmp_path)
    cases = pd.read_csv(tmp_path / "cases.csv")
    assert set(cases["site"]) == {0, 1}
    assert cases["dice_faz"].between(0, 1).all()
    has_global = method in ("fedala", "ditto", "fedlc")
    assert ("global" in set(cases["model"])) == has_global
    assert summary["rounds"] == 2 and summary["bytes_up"] > 0


# ---------------------------------------------------------------------- ALA
def _diverged_global(client):
    """A 'global' state whose decoder differs from the client's by a fixed perturbation."""
    generator = torch.Generator().manual_seed(1)
    state = {k: v.clone() for k, v in client.model.state_dict().items()}
    for name, _ in client.model.named_parameters():
        if decoder_mixed(name):
            state[name] += 0.05 * torch.randn(state[name].shape, generator=generator)
    return state


def _mixed_params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if decoder_mixed(n)}


@pytest.mark.parametrize("faithful", [False, True])
def test_ala_weights_stay_in_unit_interval_and_mix_between_local_and_global(faz_root, faithful):
    client, _ = client_for(faz_root, "fedala", faithful=faithful)
    ala = AdaptiveAggregation(eta=50.0, window=1, max_start_epochs=2, skip_iters=0, faithful=faithful)
    local, glob = _mixed_params(client.model), _diverged_global(client)
    info = ala.merge(client, glob, round_iter=100)
    assert info["skipped"] == "" and info["epochs"] == 2
    assert 0.0 <= info["weight_end"] <= 1.0 and info["weight_end"] < 1.0   # weights moved, within bounds
    merged = _mixed_params(client.model)
    for name, value in merged.items():   # every merged element lies between its local and global value
        low, high = torch.minimum(local[name], glob[name]), torch.maximum(local[name], glob[name])
        assert bool(((value >= low - 1e-6) & (value <= high + 1e-6)).all()), name
    if not faithful:
        stored = client.state["ala"]["weights"]
        assert all(float(w.min()) >= 0.0 and float(w.max()) <= 1.0 for w in stored.values())
    # parameters outside P are the received global ones
    state = client.model.state_dict()
    assert torch.equal(state["encoder.in_conv.conv_conv.0.weight"], glob["encoder.in_conv.conv_conv.0.weight"])


def test_ala_intended_weights_persist_and_faithful_weights_reset(faz_root):
    intended, _ = client_for(faz_root, "fedala")
    faithful, _ = client_for(faz_root, "fedala", faithful=True)
    for client, is_faithful in ((intended, False), (faithful, True)):
        ala = AdaptiveAggregation(eta=50.0, window=1, max_start_epochs=1, skip_iters=0, faithful=is_faithful)
        first = ala.merge(client, _diverged_global(client), round_iter=100)
        second = ala.merge(client, _diverged_global(client), round_iter=110)
        assert first["weight_start"] == 1.0
        if is_faithful:
            assert second["weight_start"] == 1.0 and client.state["ala"]["weights"] is None
        else:
            assert second["weight_start"] == pytest.approx(first["weight_end"]) and second["weight_start"] < 1.0
        buffer = io.BytesIO()
        torch.save(client.snapshot(), buffer)   # method state must be checkpointable
        buffer.seek(0)
        restored = torch.load(buffer, weights_only=False)["state"]["ala"]
        assert restored["started"] and restored["epochs"] == client.state["ala"]["epochs"]


def test_ala_parameterisation_intended_starts_global_faithful_starts_local(faz_root):
    # With a negligible learning rate the mix stays at W = 1: global (FedALA) versus local (upstream swap).
    for is_faithful in (False, True):
        client, _ = client_for(faz_root, "fedala", faithful=is_faithful)
        local, glob = _mixed_params(client.model), _diverged_global(client)
        AdaptiveAggregation(eta=1e-12, window=1, max_start_epochs=1, skip_iters=0,
                            faithful=is_faithful).merge(client, glob, round_iter=100)
        merged = _mixed_params(client.model)
        expected = local if is_faithful else glob
        assert all(torch.allclose(merged[n], expected[n], atol=1e-8) for n in merged)


def test_ala_skip_rule_and_start_phase(faz_root):
    client, _ = client_for(faz_root, "fedala")
    ala = AdaptiveAggregation(threshold=0.0, window=1, max_start_epochs=3, skip_iters=50)
    glob = _diverged_global(client)
    info = ala.merge(client, glob, round_iter=50)           # iter_global <= 50: plain global model
    assert info["skipped"] == "warm-up"
    assert all(torch.equal(v, glob[n]) for n, v in _mixed_params(client.model).items())
    info = ala.merge(client, copy.deepcopy(client.model.state_dict()), round_iter=60)
    assert info["skipped"] == "identical"
    first = ala.merge(client, _diverged_global(client), round_iter=60)
    second = ala.merge(client, _diverged_global(client), round_iter=70)
    assert first["epochs"] == 3 and second["epochs"] == 1   # threshold 0 never converges: capped start phase
    converging = AdaptiveAggregation(threshold=1e9, window=2, max_start_epochs=20, skip_iters=0)
    fresh, _ = client_for(faz_root, "fedala")
    assert converging.merge(fresh, _diverged_global(fresh), round_iter=10)["epochs"] == 3   # > window epochs


def test_ala_rejects_bad_options():
    with pytest.raises(UserError, match="method_params.window"):
        AdaptiveAggregation(window=0)


# ---------------------------------------------------------------------- FedAP
def _stats(offset):
    return {"encoder.a.mean": torch.full((4,), float(offset), dtype=torch.float64),
            "encoder.a.var": torch.ones(4, dtype=torch.float64)}


def test_fedap_weight_matrix_rows_sum_to_one_with_diagonal_m():
    from fedicra.fl import bn_similarity as module

    weights = module.similarity_weights({0: _stats(0.0), 1: _stats(1.0), 2: _stats(5.0)}, momentum=0.5)
    for i, row in weights.items():
        assert sum(row.values()) == pytest.approx(1.0)
        assert row[i] == 0.5
    assert weights[0][1] > weights[0][2]   # the closer site weighs more
    assert module.similarity_weights({3: _stats(0.0)}, 0.5) == {3: {3: 1.0}}


def test_fedap_server_sends_personalized_aggregates(faz_root):
    method = build_method(config_for(faz_root, "fedap", method_params={"pretrain_steps": 0}))
    server = ServerState(config={}, sites=[0, 1, 2], global_state={"w": torch.zeros(2)})
    method.init_server(server)
    replies = [Reply(site=s, arrays={"w": torch.full((2,), float(s))}, extras=_stats(float(s * s)),
                     metrics={}, weight=1.0) for s in (0, 1, 2)]
    method.aggregate(server, replies)
    weights = server.state["weights"]
    for site in (0, 1, 2):
        expected = sum(weights[site][j] * j for j in (0, 1, 2))
        assert torch.allclose(method.payload(server, site)["w"], torch.full((2,), expected))
    frozen = copy.deepcopy(weights)
    method.aggregate(server, [Reply(site=s, arrays={"w": torch.ones(2)}, extras=_stats(9.0 * s), metrics={},
                                    weight=1.0) for s in (0, 1, 2)])
    assert server.state["weights"] == frozen   # computed once, then frozen


def test_fedap_bn_statistics_intended_pool_pixels_faithful_averages_batches(faz_root):
    client, _ = client_for(faz_root, "fedap", batch_size=3)   # 4 training cases: batches of 3 and 1
    from fedicra.fl import bn_similarity as fedap

    intended = fedap.bn_input_statistics(client, client.model)
    faithful = fedap.bn_input_statistics(client, client.model, faithful=True)
    conv = client.model.encoder.in_conv.conv_conv[0]
    client.model.eval()
    with torch.no_grad():
        outputs = [conv(client.batch(p, phase=Stream.STATISTICS)["image"]).double()
                   for p in range(client.batches_per_epoch)]
    assert len(outputs) == 2
    pooled = torch.cat([o.transpose(0, 1).reshape(o.shape[1], -1) for o in outputs], dim=1)
    key = "encoder.in_conv.conv_conv.1"
    assert torch.allclose(intended[key + ".mean"], pooled.mean(1), atol=1e-6)
    assert torch.allclose(intended[key + ".var"], pooled.var(1, unbiased=False), atol=1e-6)
    batch_means = torch.stack([o.mean(dim=(0, 2, 3)) for o in outputs]).mean(0)
    assert torch.allclose(faithful[key + ".mean"], batch_means, atol=1e-6)
    assert not torch.allclose(faithful[key + ".mean"], intended[key + ".mean"], atol=1e-6)
    # Upstream's pairwise combination keeps the variance of the batch means between batches.
    within = torch.stack([o.var(dim=(0, 2, 3), unbiased=False) for o in outputs]).mean(0)
    between = torch.stack([o.mean(dim=(0, 2, 3)) for o in outputs]).var(0, unbiased=False)
    assert torch.allclose(faithful[key + ".var"], within + between, atol=1e-6)
    assert (between > 0).any()


# ---------------------------------------------------------------------- Ditto
def test_ditto_personal_model_differs_from_global_and_replays_the_schedule(faz_root):
    client, method = client_for(faz_root, "ditto")
    received = copy.deepcopy(client.model.state_dict())
    method.receive(client, received)
    metrics = method.train_round(client, {"local_steps": 2, "round": 1})
    assert client.step == 2   # both passes share one round of the step counter
    assert "personal_prox" in metrics and metrics["personal_prox"] >= 0
    personal, global_ = method.personalized_model(client).state_dict(), client.model.state_dict()
    assert any(not torch.equal(personal[k], global_[k]) for k in personal)
    assert all(torch.equal(method.upload(client)[k], global_[k]) for k in global_)
    with pytest.raises(UserError, match="method_params.lam"):
        build_method(config_for(faz_root, "ditto", method_params={"lam": -1.0}))


# ---------------------------------------------------------------------- MetaFed
def test_metafed_teacher_order_and_strength():
    module = __import__("sys").modules[load_methods()["metafed"].__module__]
    assert module.teacher_order({0: 0.5, 1: 0.9, 2: 0.1}) == {2: 0, 0: 1, 1: 2}
    assert module.teacher_order({4: 0.3}) == {4: 4}
    assert module.distillation_strength(0.8, 0.7, 0.5) == 0.0
    assert module.distillation_strength(0.5, 0.6, 0.5) == pytest.approx(10 ** 0.5 / 10 * 0.5)
    assert module.distillation_strength(0.1, 0.9, 0.5) == pytest.approx(0.5)


def test_metafed_payload_phases(faz_root):
    method = build_method(config_for(faz_root, "metafed", method_params={"common_rounds": 2}))
    module = __import__("sys").modules[type(method).__module__]
    server = ServerState(config={"rounds": 5}, sites=[0, 1], global_state={"w": torch.zeros(1)})
    method.init_server(server)
    assert int(method.payload(server, 0)[module.PHASE]) == module.WARMUP
    replies = [Reply(site=s, arrays={"w": torch.full((1,), float(s))}, extras={},
                     metrics={"val_dice": 0.1 + s, "uncertainty": 1e6}, weight=1.0) for s in (0, 1)]
    method.aggregate(server, replies)
    server.round = 1
    sent = method.payload(server, 0)
    assert int(sent[module.PHASE]) == module.COMMON and float(sent["teacher.w"]) == 1.0   # site 1 is better
    server.round = 5
    assert method.payload(server, 0) == {}


def test_metafed_distillation_gradient_intended_only(faz_root):
    grads = {}
    for faithful in (False, True):
        client, method = client_for(faz_root, "metafed", faithful=faithful)
        teacher = _diverged_global(client)
        client.state.update(teacher=teacher, lam=0.5)
        batch = client.batch(0)
        output = client.model(batch["image"])
        captured = {}

        def fake_train_steps(model, steps, loss_fn=None, optimizer=None):
            loss, parts = loss_fn(batch, output)
            base, _ = client.objective(batch, output)
            captured["extra_grad"] = torch.autograd.grad(loss - base, output["logits"], allow_unused=True)[0]
            captured["parts"] = parts
            return {"loss": float(loss.detach())}

        client.train_steps = fake_train_steps
        method.train_round(client, {"local_steps": 1, "round": 5})
        assert captured["parts"]["distill_kl"] > 0
        grads[faithful] = captured["extra_grad"]
    assert grads[False] is not None and float(grads[False].abs().sum()) > 0
    assert grads[True] is None or float(grads[True].abs().sum()) == 0


# ---------------------------------------------------------------------- FedLC
def test_fedlc_negative_sites_and_site_zero_quirk(faz_root):
    from fedicra.fl.personalization import other_sites

    assert other_sites(2, 4, faithful=False) == [0, 1, 3]
    assert other_sites(2, 4, faithful=True) == [2, 1, 3]   # upstream: code 0 became the own site
    assert other_sites(0, 3, faithful=True) == [1, 2]


def test_fedlc_loss_adds_site_contrast(faz_root):
    client, method = client_for(faz_root, "fedlc", key=1)
    batch = client.batch(0)
    output = client.model(batch["image"])
    loss, parts = method.loss(client, batch, output)
    base, _ = client.objective(batch, output)
    assert parts["site_contrast"] <= 0   # negative MSE to the other site codes' attention
    assert float(loss.detach()) == pytest.approx(float(base.detach()) + 0.5 * parts["site_contrast"], rel=1e-5)
    assert not math.isclose(parts["site_contrast"], 0.0)
