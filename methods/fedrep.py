"""FedRep (Collins et al. 2021), as upstream (reference 5.5): the head `decoder.out_conv` is personal;
each round trains the head alone for `local_steps - rep_iters` steps, then the body alone for
`rep_iters` steps.

`rep_iters`: upstream's 3 of 10 local steps; intended, the same share of this run's local steps
(at least 1 each; quirk 26). Optimiser: intended, the AdamW every method shares (quirk 27);
`faithful`: upstream's SGD (momentum 0.9, weight decay 1e-4 on the head's non-bias weights only),
re-created every round like every optimiser here."""
import torch

from fedicra.fl.method import Method
from fedicra.fl.personalization import REP_ITERS, body_steps, head_then_body
from fedicra.fl.registry import register
from fedicra.models.groups import HEAD, is_head

@register
class FedRep(Method):
    name = "fedrep"
    personal = (HEAD,)
    hyperparameters = {"rep_iters": REP_ITERS}
    description = "Personal head trained first, then the shared body, every round."

    def resolve(self, config):
        return {"rep_iters": body_steps(self.hp["rep_iters"], config)}

    def trainable(self, client, step_in_round):
        return head_then_body(step_in_round, client.config["local_steps"], self.hp["rep_iters"])

    def make_optimizer(self, client, model):
        if not self.faithful:
            return super().make_optimizer(client, model)
        head_weights = [p for n, p in model.named_parameters() if is_head(n) and not n.endswith("bias")]
        others = [p for n, p in model.named_parameters() if not (is_head(n) and not n.endswith("bias"))]
        return torch.optim.SGD([{"params": head_weights, "weight_decay": 1e-4},
                                {"params": others, "weight_decay": 0.0}], lr=client.lr(), momentum=0.9)
