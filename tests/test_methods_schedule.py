"""Run-relative schedule constants, the gated CRF window and the objective option."""
import pytest

from fedicra.errors import UserError
from fedicra.fl import schedule
from fedicra.fl.config import load_config
from fedicra.fl.registry import build_method
from fedicra.losses.gated_crf import scaled_window


def config(tiny_faz, method, **overrides):
    return load_config(base={"dataset": str(tiny_faz), "method": method, "rounds": 8, "local_steps": 5,
                             "progress": False, **overrides})


@pytest.mark.parametrize("faithful,expected", [
    (False, {"fedala": {"skip_iters": 0}, "fedrep": {"rep_iters": 2}, "fedap": {"pretrain_steps": 1},
             "metafed": {"common_rounds": 2, "distill_after_rounds": 0}}),
    (True, {"fedala": {"skip_iters": 50}, "fedrep": {"rep_iters": 3}, "fedap": {"pretrain_steps": 150},
            "metafed": {"common_rounds": 40, "distill_after_rounds": 10}}),
])
def test_schedule_constants_resolve_relative_to_the_run(tiny_faz, faithful, expected):
    for name, values in expected.items():
        if faithful and name == "fedrep":
            cfg = config(tiny_faz, name, faithful=True, local_steps=10)
        else:
            cfg = config(tiny_faz, name, faithful=faithful)
        assert build_method(cfg).resolved == values, name


def test_schedules_at_paper_scale_equal_upstream_in_both_modes(tiny_faz):
    paper = dict(rounds=3000, local_steps=10)
    assert build_method(config(tiny_faz, "fedala", **paper)).resolved == {"skip_iters": 50}
    assert build_method(config(tiny_faz, "metafed", **paper)).resolved == {"common_rounds": 40,
                                                                           "distill_after_rounds": 10}
    assert build_method(config(tiny_faz, "fedicra", **paper)).hp["rep_iters"] == 3
    # FedAP's pre-training stays inside one round of the shared budget in intended mode.
    assert build_method(config(tiny_faz, "fedap", **paper)).resolved == {"pretrain_steps": 10}


def test_explicit_values_win_and_bad_ones_fail(tiny_faz):
    assert build_method(config(tiny_faz, "fedala", method_params={"skip_iters": 7})).resolved == {"skip_iters": 7}
    with pytest.raises(UserError, match="method_params.pretrain_steps: at most local_steps"):
        build_method(config(tiny_faz, "fedap", method_params={"pretrain_steps": 6}))
    with pytest.raises(UserError, match=r"method_params.rep_iters: must be in \[1, inf\)"):
        build_method(config(tiny_faz, "fedrep", method_params={"rep_iters": 0}))


def test_phases_that_must_happen_happen_at_least_once():
    short = {"rounds": 3, "local_steps": 2, "faithful": False}
    assert schedule.rounds(40, short, low=2, high=short["rounds"] - 1) == 2
    assert schedule.steps_in_round(3, short) == 1
    assert schedule.iterations(150, short, low=1, high=2) == 1


def test_gated_crf_window_scales_with_the_image_side():
    assert scaled_window(256, 256, False) == {"radius": 5, "sigma_xy": 6.0}
    assert scaled_window(64, 256, False) == {"radius": 1, "sigma_xy": 1.5}
    assert scaled_window(128, 256, False) == {"radius": 3, "sigma_xy": 3.0}
    assert scaled_window(64, 384, True) == {"radius": 5, "sigma_xy": 6.0}


def test_objective_option_sets_terms_and_model(tiny_faz):
    assert build_method(config(tiny_faz, "fedavg")).objective_terms == ("pce",)
    fedavg = build_method(config(tiny_faz, "fedavg", objective="pce+gcrf+mtel"))
    assert fedavg.objective_terms == ("pce", "gcrf", "mtel")
    assert fedavg.model == "unet_multihead"
    assert build_method(config(tiny_faz, "fedlc", objective="pce+gcrf+mtel")).model == "unet_lc_multihead"
    fedicra = build_method(config(tiny_faz, "fedicra"))
    assert set(fedicra.objective_terms) == {"pce", "gcrf", "mtel"}
    assert build_method(config(tiny_faz, "fedicra", objective="pce")).objective_terms == ("pce",)
    ablated = build_method(config(tiny_faz, "fedicra", method_params={"tree_energy": False}))
    assert set(ablated.objective_terms) == {"pce", "gcrf"}
    assert build_method(config(tiny_faz, "fedavg", gated_crf=0.2)).objective_settings["gcrf"] == 0.2
    with pytest.raises(UserError, match="option objective"):
        load_config(base={"dataset": str(tiny_faz), "method": "fedavg", "objective": "ce"})


def test_fedavg_on_fedicra_objective_trains_every_term(tiny_faz, tmp_path):
    from fedicra.fl.runner import run_experiment

    import json

    cfg = load_config(base={"dataset": str(tiny_faz), "method": "fedavg", "sites": [0, 1], "rounds": 1,
                            "local_steps": 1, "batch_size": 2, "progress": False, "objective": "pce+gcrf+mtel"})
    run_experiment(cfg, tmp_path)
    resolved = json.loads((tmp_path / "config.json").read_text())["resolved"]
    assert resolved["objective"] == "pce+gcrf+mtel" and resolved["model"] == "unet_multihead"
    assert resolved["gated_crf_radius"] >= 1
