"""Ditto (Li et al. ICML 2021): fair and robust personalization through a proximal personal model.

The global model w is trained and averaged exactly as in FedAvg. Each client also keeps a personal model
v (the whole network, BatchNorm included) that never leaves it. Every round, after the received w_G is
loaded, the client
  1. trains w for `local_steps` (FedAvg's local update; this is what is uploaded), and
  2. trains v for `local_steps` on the same batches with the same learning rates, minimising
     objective(v) + (lambda/2) * ||v - w_G||^2 over parameters, w_G = the model received this round.
Both passes see identical batches and schedule (the step counter advances once per round, by
`local_steps`), so Ditto spends twice the computation of FedAvg per round, as in the paper.
The personal model is scored as the site's personalized model; the global model is reported too.
Not in upstream's code (reference 5); `faithful` changes nothing here.
"""
import copy

import torch

from fedicra.fl.hyperparameters import Param
from fedicra.fl.method import Method
from fedicra.fl.registry import register


@register
class Ditto(Method):
    name = "ditto"
    hyperparameters = {"lam": Param(0.1, "weight of the proximal term of the personal model", low=0)}
    has_global_model = True
    budget = 2.0   # the paper trains the global and the personal model every round
    description = "FedAvg global model plus a personal model kept close to it by a proximal term."

    def init_client(self, client) -> None:
        client.state["personal"] = copy.deepcopy(client.model.state_dict())

    def personal_model(self, client) -> torch.nn.Module:
        model = copy.deepcopy(client.model)
        model.load_state_dict(client.state["personal"])
        return model

    def train_round(self, client, config):
        anchor = [p.detach().clone() for p in client.model.parameters()]   # w_G as received
        start = client.step
        metrics = client.train_steps(client.model, config["local_steps"])
        end, client.step = client.step, start   # replay the same batches and learning rates for v
        personal = self.personal_model(client)
        lam = self.hp["lam"]

        def personal_loss(batch, output):
            loss, parts = self.loss(client, batch, output)
            prox = sum(((p - a) ** 2).sum() for p, a in zip(personal.parameters(), anchor))
            parts["prox"] = float(prox.detach())
            return loss + lam / 2 * prox, parts

        personal_metrics = client.train_steps(personal, config["local_steps"], loss_fn=personal_loss)
        client.step = end
        client.state["personal"] = {k: v.detach().clone() for k, v in personal.state_dict().items()}
        metrics.update({f"personal_{k}": v for k, v in personal_metrics.items()})
        return metrics

    def personalized_model(self, client) -> torch.nn.Module:
        return self.personal_model(client)

    def new_site_model(self, client) -> torch.nn.Module:
        # A new site's personal model has never trained: the best it has is the global model it received.
        return client.model
