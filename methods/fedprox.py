"""FedProx (Li et al. 2020): FedAvg plus a proximal term to the round's global model (reference 5.2).

Intended: (mu/2)*||w - w_G||^2 from the first local step. `faithful`: upstream's (mu/2)*||w - w_G||
(the norm, not its square) from the second local step of the round on."""
import torch

from fedicra.fl.hyperparameters import Param
from fedicra.fl.method import Method
from fedicra.fl.registry import register


@register
class FedProx(Method):
    name = "fedprox"
    hyperparameters = {"mu": Param(1e-3, "weight of the proximal term", low=0)}
    description = "FedAvg with a proximal term towards the global model."

    def receive(self, client, arrays) -> None:
        super().receive(client, arrays)
        client.state["anchor"] = [p.detach().clone() for p in client.model.parameters()]
        client.state["round_start"] = client.step

    def loss(self, client, batch, output):
        loss, parts = super().loss(client, batch, output)
        if self.faithful and client.step == client.state["round_start"]:
            return loss, parts
        squared = sum(((p - a) ** 2).sum() for p, a in zip(client.model.parameters(), client.state["anchor"]))
        prox = torch.sqrt(squared) if self.faithful else squared
        parts["prox"] = float(prox.detach())
        return loss + self.hp["mu"] / 2 * prox, parts
