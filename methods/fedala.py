"""FedALA (Zhang et al. AAAI 2023) as run upstream (reference 5.7): FedAvg on the server; on receipt
each client merges the global model with Adaptive Local Aggregation (`fedicra.fl.ala`) over the decoder
`up1..up4` + `out_conv` parameters, learning element-wise mixing weights on its own batches (pCE).

Everything is uploaded and averaged (encoder, decoder, BatchNorm statistics), so a global model exists.
ALA runs once per received message, i.e. also before validation and before the final test (upstream runs
it in every fit and evaluate call, quirk 5). The round's iteration count that the skip rule compares with
`skip_iters` is upstream's `iter_global` = (rounds done + 1) * local_steps.

Hyper-parameters: `eta` (ALA learning rate, 1.0), `threshold` (0.1) and `window` (10) of the start-phase
convergence rule, `skip_iters` (50: no ALA while iter_global <= 50), `max_start_epochs` (50: cap on the
start phase; upstream has none). `faithful`: W reset every call and upstream's swapped parameterisation.
"""
from fedicra.fl.ala import AdaptiveAggregation
from fedicra.fl.method import Method
from fedicra.fl.registry import register


@register
class FedALA(Method):
    name = "fedala"
    hyperparameters = {"eta": 1.0, "threshold": 0.1, "window": 10, "skip_iters": 50, "max_start_epochs": 50}
    description = "FedAvg with adaptive element-wise mixing of the global decoder into the local one."

    def __init__(self, params=None, faithful=False):
        super().__init__(params, faithful)
        hp = self.hp
        self.ala = AdaptiveAggregation(eta=hp["eta"], threshold=hp["threshold"], window=hp["window"],
                                       skip_iters=hp["skip_iters"], max_start_epochs=hp["max_start_epochs"],
                                       faithful=faithful)

    def receive(self, client, arrays) -> None:
        if not arrays:
            return
        info = self.ala.merge(client, arrays, round_iter=client.step + client.config["local_steps"])
        client.state["ala_last"] = info

    def train_round(self, client, config):
        metrics = super().train_round(client, config)
        last = client.state.get("ala_last", {})
        metrics["ala_epochs"] = float(last.get("epochs", 0))
        if "weight_end" in last:
            metrics["ala_weight_mean"] = last["weight_end"]
        return metrics
