"""FedAP (Lu et al. 2022, adaptive BatchNorm personalization) as run upstream (reference 5.4).

1. Pre-training. Upstream trains one model for 150 steps on the POOLED training data of all sites
   (SGD lr = base lr, momentum 0.9, weight decay 1e-4, pCE) and starts federated training from it. A
   server here holds no data, so round 1 starts with `pretrain_steps` such SGD steps on every client
   from the common initial model, on its own data; the server averages the uploads (without
   BatchNorm) into the model everyone continues from (one-shot FedAvg, the federated stand-in for
   pooled pre-training). Each site keeps its own pre-trained BatchNorm (upstream hands everyone the
   pooled model's). Intended (quirk 26): `pretrain_steps` is upstream's 150 of 30,000 as the same
   fraction of this run (at least 1, at most one round), and it comes out of the shared budget: round
   1 runs `local_steps - pretrain_steps` regular steps after it, and the pre-training steps advance the
   learning-rate schedule. `faithful`: 150 steps on top of the budget, round 1 runs no regular steps.
   `pretrain_steps: 0` skips pre-training (round 1 is then a regular round).
2. In the first regular round every client trains from the pre-trained model, then passes one
   epoch of its training batches through the network (eval mode) and reports, for the input of every
   encoder BatchNorm layer, the per-channel mean and variance (`fedicra.fl.bn_similarity`).
3. The server sets d_ij = sum over layers of sqrt(||mu_i - mu_j||^2 + ||sd_i - sd_j||^2) (Wasserstein-2
   between per-channel Gaussians), w_ij proportional to 1/d_ij for j != i scaled to sum to 1 - m, and
   w_ii = m (`momentum`, 0.5). The matrix is frozen once computed.
4. From then on the server sends site i its own aggregate sum_j w_ij theta_j of the non-BatchNorm
   tensors; BatchNorm layers stay on the site (as FedBN). No single global model exists.

`faithful` (quirk 17): upstream pools the statistics with the same weight for every batch, including
the between-batch variance of the batch means; intended pools every pixel of the epoch.
"""
from __future__ import annotations

import torch

from fedicra.fl import schedule
from fedicra.fl.bn_similarity import bn_input_statistics, mix, similarity_weights
from fedicra.errors import UserError
from fedicra.fl.hyperparameters import Param
from fedicra.fl.method import Method, weighted_average
from fedicra.fl.registry import register
from fedicra.seeding import Stream  # pre-training and statistics batches: their own streams
from fedicra.models.groups import BATCHNORM

UPSTREAM_PRETRAIN_STEPS = 150


@register
class FedAP(Method):
    name = "fedap"
    personal_types = (BATCHNORM,)
    has_global_model = False
    hyperparameters = {
        "pretrain_steps": Param(None, "SGD pre-training steps at the start of round 1 (upstream 150 of 30,000; "
                                      "null = the same fraction of the run)", kind=int, low=0),
        "momentum": Param(0.5, "weight of a site's own model in its aggregate (w_ii)", low=0, high=1),
    }
    description = "Per-site aggregates weighted by BatchNorm-statistics similarity; BatchNorm stays local."

    def resolve(self, config):
        if self.faithful:
            return {"pretrain_steps": UPSTREAM_PRETRAIN_STEPS}
        return {"pretrain_steps": schedule.iterations(UPSTREAM_PRETRAIN_STEPS, config, low=1,
                                                      high=config["local_steps"])}

    def configure(self, config):
        super().configure(config)
        if not self.faithful and self.hp["pretrain_steps"] > config["local_steps"]:
            raise UserError(f"method_params.pretrain_steps: at most local_steps ({config['local_steps']}) "
                            f"unless faithful, got {self.hp['pretrain_steps']}")

    def gradient_budget(self, config) -> int:
        if self.faithful and self.hp["pretrain_steps"] > 0:   # upstream: pre-training on top of the run
            return self.hp["pretrain_steps"] + (config["rounds"] - 1) * config["local_steps"]
        return super().gradient_budget(config)

    @property
    def stats_round(self) -> int:
        return 2 if self.hp["pretrain_steps"] > 0 else 1

    # ------------------------------------------------------------------ client
    def train_round(self, client, config):
        if int(config["round"]) == 1 and self.hp["pretrain_steps"] > 0:
            metrics = self.pretrain(client)
            if not self.faithful:   # the rest of round 1's budget: regular local steps
                regular = config["local_steps"] - self.hp["pretrain_steps"]
                if regular > 0:
                    metrics = {**metrics, **client.train_steps(client.model, regular)}
            return metrics
        metrics = super().train_round(client, config)
        client.state["send_stats"] = int(config["round"]) == self.stats_round
        return metrics

    def pretrain(self, client) -> dict[str, float]:
        from fedicra.losses import partial_cross_entropy

        model = client.model
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=client.config["lr"], momentum=0.9, weight_decay=1e-4)
        steps, total = self.hp["pretrain_steps"], 0.0
        with client.random_state():
            for i in range(steps):
                batch = client.batch(i, phase=Stream.PRETRAINING)
                loss = partial_cross_entropy(model(batch["image"])["logits"], batch["label"],
                                             ignore_index=client.manifest.num_classes)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                client.gradient_steps += 1
                if not self.faithful:   # part of the shared budget: it advances the schedule
                    client.step += 1
                total += float(loss.detach()) / steps
        return {"loss": total, "pretrain_loss": total}

    def client_extras(self, client):
        if not client.state.pop("send_stats", False):
            return {}
        return bn_input_statistics(client, client.model, faithful=self.faithful)

    # ------------------------------------------------------------------ server
    def init_server(self, server) -> None:
        server.state.update(weights=None, personal={})

    def aggregate(self, server, replies) -> None:
        states = {r.site: r.arrays for r in replies}
        server.global_state.update(weighted_average([r.arrays for r in replies], [r.weight for r in replies]))
        stats = {r.site: r.extras for r in replies if r.extras}
        if server.state["weights"] is None and stats:
            server.state["weights"] = similarity_weights(stats, self.hp["momentum"])
        weights = server.state["weights"]
        if weights is None:   # pre-training round: everyone starts from the averaged model
            server.state["personal"] = {}
            return
        for site in states:
            if site in weights:
                server.state["personal"][site] = mix(states, weights[site])

    def payload(self, server, site):
        if site in server.state["personal"]:
            return server.state["personal"][site]
        return super().payload(server, site)
