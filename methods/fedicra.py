"""FedICRA (Lin et al., MLMI 2023, arXiv 2304.05635), reference section 4.

Model `unet_lc_multihead`: site-coded channel selection (PCS) on the bottleneck and three auxiliary heads.
Local objective (4.1): pCE + L_MTEL (tree energy, weight `tree_weight`) + `gated_crf_weight` * L_GCRF
+ `alpha` * L_SC (site contrast on the PCS attention). Local schedule (4.6): the head alone for
`local_steps - rep_iters` steps, then the body, AdamW re-created every round, poly learning rate.
On receipt (4.7) the decoder is merged by adaptive element-wise aggregation (`fedicra.fl.ala`);
the server averages every tensor (4.8), so a global model exists and is scored too.

Ablations (method_params): contrastive, adaptive_aggregation, tree_energy, gated_crf (booleans) and
tree_mode (`recursive` = upstream's cascade, `add`, `single` = single-scale).
`faithful`: frozen unregistered PCS with the site-0 quirk, ALA weights reset each call with upstream's
swapped parameterisation, frozen tensors still stepped by AdamW (see fedicra.fl.client.train_steps).
"""
from fedicra.fl.ala import AdaptiveAggregation
from fedicra.fl.method import Method, load_shared
from fedicra.fl.personalization import head_then_body, site_contrast
from fedicra.fl.registry import register


@register
class FedICRA(Method):
    name = "fedicra"
    model = "unet_lc_multihead"
    hyperparameters = {
        "alpha": 1.0,            # README command (code default 0.5)
        "tree_weight": 0.1,
        "gated_crf_weight": 0.1,
        "rep_iters": 3,
        "contrastive": True,
        "adaptive_aggregation": True,
        "tree_energy": True,
        "gated_crf": True,
        "tree_mode": "recursive",
        "eta": 1.0, "threshold": 0.1, "window": 10, "skip_iters": 50, "max_start_epochs": 50,
    }
    description = "Weak-supervision objective + site-contrastive channel selection + adaptive aggregation."

    def __init__(self, params=None, faithful=False):
        super().__init__(params, faithful)
        from fedicra.errors import UserError

        if self.hp["tree_mode"] not in ("recursive", "add", "single"):
            raise UserError(f"method_params.tree_mode: expected recursive, add or single, got {self.hp['tree_mode']!r}")
        hp = self.hp
        self.ala = AdaptiveAggregation(eta=hp["eta"], threshold=hp["threshold"], window=hp["window"],
                                       skip_iters=hp["skip_iters"], max_start_epochs=hp["max_start_epochs"],
                                       faithful=faithful)

    def receive(self, client, arrays) -> None:
        if not self.hp["adaptive_aggregation"]:
            load_shared(client.model, arrays, self.is_personal)
        elif arrays:
            client.state["ala_last"] = self.ala.merge(client, arrays, round_iter=client.step + client.config["local_steps"])

    def trainable(self, client, step_in_round):
        return head_then_body(step_in_round, client.config["local_steps"], self.hp["rep_iters"])

    def loss(self, client, batch, output):
        from fedicra.losses import gated_crf_loss, partial_cross_entropy, tree_energy_loss
        import torch

        ignore = client.manifest.num_classes
        loss = partial_cross_entropy(output["logits"], batch["label"], ignore_index=ignore)
        parts = {"pce": float(loss.detach())}
        if self.hp["tree_energy"]:
            tree = tree_energy_loss(output["logits"], batch["image"], output["aux"], batch["label"], ignore,
                                    weight=self.hp["tree_weight"], mode=self.hp["tree_mode"])
            loss, parts["tree_energy"] = loss + tree, float(tree.detach())
        if self.hp["gated_crf"]:
            crf = gated_crf_loss(torch.softmax(output["logits"], dim=1), batch["image"])
            loss, parts["gated_crf"] = loss + self.hp["gated_crf_weight"] * crf, float(crf.detach())
        if self.hp["contrastive"]:
            contrast = site_contrast(client.model, batch["image"], output, self.faithful)
            loss, parts["site_contrast"] = loss + self.hp["alpha"] * contrast, float(contrast.detach())
        return loss, parts
