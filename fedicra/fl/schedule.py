"""Schedule and spatial constants that upstream states in absolute units, resolved for this run.

Upstream runs 30,000 local iterations per client in rounds of 10 (3,000 rounds) on 256 px (FAZ) or
384 px (ODOC) images. A constant stated there in iterations, rounds or pixels switches a mechanism off
(or multiplies the budget) when copied into a 40-iteration run on 64 px images. In intended mode each
becomes the same fraction of this run (or of the image side); `faithful: true` keeps upstream's
absolute value. Rounding keeps every phase that must happen at least once (the bounds are per
constant). The resolved values are written to the run's `config.json` under `resolved`.
"""
from __future__ import annotations

import math

UPSTREAM_ITERATIONS = 30_000
UPSTREAM_LOCAL_STEPS = 10
UPSTREAM_ROUNDS = UPSTREAM_ITERATIONS // UPSTREAM_LOCAL_STEPS


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value)) if low <= high else low


def iterations(upstream: int, config: dict, low: int = 0, high: int | None = None) -> int:
    """`upstream` iterations of 30,000 as the same fraction of this run's rounds x local steps."""
    if config["faithful"]:
        return upstream
    total = config["rounds"] * config["local_steps"]
    return _clamp(_round_half_up(upstream / UPSTREAM_ITERATIONS * total), low, total if high is None else high)


def rounds(upstream: int, config: dict, low: int = 0, high: int | None = None) -> int:
    """`upstream` rounds of 3,000 as the same fraction of this run's rounds."""
    if config["faithful"]:
        return upstream
    value = _round_half_up(upstream / UPSTREAM_ROUNDS * config["rounds"])
    return _clamp(value, low, config["rounds"] if high is None else high)


def steps_in_round(upstream: int, config: dict) -> int:
    """A split of upstream's 10-step round (e.g. FedRep's 3 body steps) as the same fraction of this
    run's local steps, at least 1 and leaving at least 1 step for the other part."""
    if config["faithful"]:
        return upstream
    return _clamp(_round_half_up(upstream / UPSTREAM_LOCAL_STEPS * config["local_steps"]), 1,
                  config["local_steps"] - 1)


def pixels(upstream: float, side: int, upstream_side: int, faithful: bool) -> float:
    """A length in pixels at upstream's image side, scaled to this run's side."""
    return upstream if faithful else upstream * side / upstream_side


def resolved_values(config: dict, method, manifest) -> dict:
    """What this run actually used where upstream states a constant: the method's run-relative
    hyper-parameters, the objective, the model, the gated CRF window and the gradient budget per site."""
    from fedicra.losses.gated_crf import scaled_window

    window = scaled_window(manifest.img_size, manifest.preset.img_size, config["faithful"])
    return {"method_params": dict(method.resolved), "objective": "+".join(method.objective_terms),
            "model": method.model, "gated_crf_radius": window["radius"], "gated_crf_sigma_xy": window["sigma_xy"],
            "gradient_steps_per_site": method.gradient_budget(config)}
