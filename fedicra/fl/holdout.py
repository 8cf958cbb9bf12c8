"""Leave-one-site-out: score the held-out site, which never trained, as a new site joining after the run.

A run with `holdout_site: k` trains on the other sites (`fedicra.fl.setup.site_indices`); then
- site methods: a fresh client of site k (the common initial model, as every site starts) receives the
  server's final payload for site k through the method's own `receive`, with no local training step,
  and is scored on site k's test set: `unseen_global` = the received global model (methods that have
  one), `unseen_personalized` = `method.new_site_model(client)` after the receipt (the method's best
  available model for a new site: FedBN / FedAP keep their fresh BatchNorm, FedALA / FedICRA run their
  adaptive merge on the new site's training data, FedPer / FedRep keep a fresh head);
  a method that declares `new_site = False` (local, MetaFed: nothing is sent in the final round), or
  whose server sends site k nothing, gets no row;
- pooled methods: the pool (trained without site k) scores its model on site k (`unseen_global`,
  `fedicra.fl.client.Client.final_scores`).
The new site joins after the last round: its step counter starts at rounds x local_steps, so
schedule rules that look at the iteration (ALA's warm-up) see the end of the run.
"""
from __future__ import annotations

import copy
from typing import Any

from fedicra.fl.method import Method
from fedicra.record import UNSEEN_GLOBAL, UNSEEN_PERSONALIZED


def new_site_cases(config: dict[str, Any], method: Method, manifest, server) -> list[dict[str, Any]]:
    """cases.csv rows of the held-out site scored as a new site; [] when off, pooled or nothing is shared."""
    import pandas as pd

    from fedicra.fl.setup import holdout_site, make_client

    site = holdout_site(config, manifest)
    if site is None or method.topology == "pooled" or not method.new_site:
        return []
    arrays = method.payload(server, site)
    if not arrays:
        return []
    client = make_client(config, method, site, manifest)
    client.step = config["rounds"] * config["local_steps"]
    models = {}
    if method.global_model_available():
        received = copy.deepcopy(client.model)
        received.load_state_dict({**received.state_dict(), **arrays})
        models[UNSEEN_GLOBAL] = received
    method.receive(client, arrays)
    models[UNSEEN_PERSONALIZED] = method.new_site_model(client)
    frames = [client.case_frame(model, client.data[0], kind, "last", config["rounds"]) for kind, model in models.items()]
    return pd.concat(frames, ignore_index=True).to_dict(orient="records")
