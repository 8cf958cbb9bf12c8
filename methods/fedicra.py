"""FedICRA (Lin et al., MLMI 2023, arXiv 2304.05635), reference section 4.

Model `unet_lc_multihead`: site-coded channel selection (PCS) on the bottleneck and three auxiliary heads.
Local objective (4.1): pCE + L_MTEL (tree energy, weight `tree_weight`) + `gated_crf_weight` * L_GCRF
(the shared objective `pce+gcrf+mtel`, `fedicra.fl.client.Client.objective`) + `alpha` * L_SC (site
contrast on the PCS attention). Local schedule (4.6): the head alone for `local_steps - rep_iters`
steps, then the body, AdamW re-created every round, poly learning rate. On receipt (4.7) the decoder
is merged by adaptive element-wise aggregation (`fedicra.fl.ala`); the server averages every tensor
(4.8), so a global model exists and is scored too.

Ablations (method_params): contrastive, adaptive_aggregation, tree_energy, gated_crf (booleans) and
tree_mode (`recursive` = upstream's cascade, `add`, `single` = single-scale); the run's `objective`
option replaces the objective as a whole (e.g. `pce` trains FedICRA's mechanisms on partial CE alone).
Intended: L_SC in LC-Fed's form (detached bottleneck, gradient into the PCS only); `rep_iters` and
ALA's `skip_iters` as the same share of the run as upstream's (quirk 26).
`faithful`: frozen unregistered PCS with the site-0 quirk and upstream's L_SC (own attention with
gradient, others detached, so the gradient reaches the encoder), ALA weights reset each call with
upstream's swapped parameterisation, frozen tensors still stepped by AdamW
(see fedicra.fl.client.train_steps), upstream's absolute schedule constants.
"""
from functools import cached_property

from fedicra.fl.ala import ALA_PARAMS, AdaptiveAggregation, resolve_ala, round_metrics
from fedicra.fl.hyperparameters import Param
from fedicra.fl.method import Method, load_shared
from fedicra.fl.personalization import LCFED, REP_ITERS, UPSTREAM_FEDICRA, body_steps, head_then_body, site_contrast
from fedicra.fl.registry import register


@register
class FedICRA(Method):
    name = "fedicra"
    model = "unet_lc_multihead"
    objective = "pce+gcrf+mtel"
    hyperparameters = {
        "alpha": Param(1.0, "weight of the site-contrastive term (README command; code default 0.5)", low=0),
        "tree_weight": Param(0.1, "weight of the multiscale tree energy", low=0),
        "gated_crf_weight": Param(0.1, "weight of the gated CRF term", low=0),
        "rep_iters": REP_ITERS,
        "contrastive": Param(True, "ablation switch: the site-contrastive term"),
        "adaptive_aggregation": Param(True, "ablation switch: ALA on receipt (off = plain load)"),
        "tree_energy": Param(True, "ablation switch: the tree-energy term"),
        "gated_crf": Param(True, "ablation switch: the gated CRF term"),
        "tree_mode": Param("recursive", "multiscale tree energy variant", choices=("recursive", "add", "single")),
        **ALA_PARAMS,
    }
    description = "Weak-supervision objective + site-contrastive channel selection + adaptive aggregation."

    def resolve(self, config):
        return {**resolve_ala(config), "rep_iters": body_steps(self.hp["rep_iters"], config)}

    def choose_objective(self, config):
        terms = super().choose_objective(config)
        dropped = {"mtel": not self.hp["tree_energy"], "gcrf": not self.hp["gated_crf"]}
        return tuple(t for t in terms if not dropped.get(t, False))

    def objective_weights(self, config):
        return {"gcrf": self.hp["gated_crf_weight"], "mtel": self.hp["tree_weight"], "tree_mode": self.hp["tree_mode"]}

    @cached_property
    def ala(self) -> AdaptiveAggregation:
        return AdaptiveAggregation.from_params(self.hp, self.faithful)

    def receive(self, client, arrays) -> None:
        if not self.hp["adaptive_aggregation"]:
            load_shared(client.model, arrays, self.is_personal)
        elif arrays:
            client.state["ala_last"] = self.ala.merge(client, arrays, round_iter=client.step + client.config["local_steps"])

    def train_round(self, client, config):
        return {**super().train_round(client, config), **round_metrics(client.state.get("ala_last"))}

    def trainable(self, client, step_in_round):
        return head_then_body(step_in_round, client.config["local_steps"], self.hp["rep_iters"])

    def loss(self, client, batch, output):
        loss, parts = client.objective(batch, output)
        if self.hp["contrastive"]:
            mode = UPSTREAM_FEDICRA if self.faithful else LCFED
            contrast = site_contrast(client.model, batch["image"], output, mode)
            loss, parts["site_contrast"] = loss + self.hp["alpha"] * contrast, float(contrast.detach())
        return loss, parts
