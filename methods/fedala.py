"""FedALA (Zhang et al. AAAI 2023) as run upstream (reference 5.7): FedAvg on the server; on receipt
each client merges the global model with Adaptive Local Aggregation (`fedicra.fl.ala`) over the decoder
`up1..up4` + `out_conv` parameters, learning element-wise mixing weights on its own batches (pCE).

Everything is uploaded and averaged (encoder, decoder, BatchNorm statistics), so a global model exists.
ALA runs once per received message, i.e. also before validation and before the final test (upstream runs
it in every fit and evaluate call, quirk 5). The round's iteration count that the skip rule compares with
`skip_iters` is upstream's `iter_global` = (rounds done + 1) * local_steps.

Hyper-parameters: `fedicra.fl.ala.ALA_PARAMS`. `skip_iters` is upstream's 50 of 30,000 iterations in
faithful mode and the same fraction of the run otherwise (quirk 26: 0 for any run under 300 rounds of
10 steps, so ALA runs in every round after the first). `faithful`: W reset every call and upstream's
swapped parameterisation.
"""
from functools import cached_property

from fedicra.fl.ala import ALA_PARAMS, AdaptiveAggregation, resolve_ala, round_metrics
from fedicra.fl.method import Method
from fedicra.fl.registry import register


@register
class FedALA(Method):
    name = "fedala"
    hyperparameters = dict(ALA_PARAMS)
    description = "FedAvg with adaptive element-wise mixing of the global decoder into the local one."

    def resolve(self, config):
        return resolve_ala(config)

    @cached_property
    def ala(self) -> AdaptiveAggregation:
        return AdaptiveAggregation.from_params(self.hp, self.faithful)

    def receive(self, client, arrays) -> None:
        if not arrays:
            return
        info = self.ala.merge(client, arrays, round_iter=client.step + client.config["local_steps"])
        client.state["ala_last"] = info

    def train_round(self, client, config):
        return {**super().train_round(client, config), **round_metrics(client.state.get("ala_last"))}
