"""FedRep (Collins et al. 2021), as upstream (reference 5.5): the head `decoder.out_conv` is personal;
each round trains the head alone for `local_steps - rep_iters` steps, then the body alone for
`rep_iters` steps, with SGD (momentum 0.9, weight decay 1e-4 on the head's non-bias weights)."""
import torch

from fedicra.errors import UserError
from fedicra.fl.method import Method
from fedicra.fl.registry import register

HEAD = "decoder.out_conv"


def is_head(name: str) -> bool:
    return name.startswith(HEAD + ".")


@register
class FedRep(Method):
    name = "fedrep"
    personal = (HEAD,)
    hyperparameters = {"rep_iters": 3}
    description = "Personal head trained first, then the shared body, every round."

    def train_round(self, client, config):
        if not 0 < self.hp["rep_iters"] < config["local_steps"]:
            raise UserError(f"method_params.rep_iters: must be between 1 and local_steps-1 ({config['local_steps']})")
        return super().train_round(client, config)

    def trainable(self, client, step_in_round):
        head_phase = step_in_round < client.config["local_steps"] - self.hp["rep_iters"]
        return is_head if head_phase else (lambda name: not is_head(name))

    def make_optimizer(self, client, model):
        named = dict(model.named_parameters())
        decay = [p for n, p in named.items() if is_head(n) and not n.endswith("bias")]
        rest = [p for n, p in named.items() if not (is_head(n) and not n.endswith("bias"))]
        return torch.optim.SGD([{"params": decay, "weight_decay": 1e-4}, {"params": rest, "weight_decay": 0.0}],
                               lr=client.lr(), momentum=0.9)
