"""FedLC (LC-Fed, Wang et al. MICCAI 2022) as run upstream (reference 5.6, 4.5).

Model `unet_lc`: personalized channel selection (PCS) on the bottleneck, driven by a one-hot site code.
Loss = shared objective + alpha * L_SC, the site-contrastive term that pushes this site's channel
attention away from the attention every other site code gives on the same batch
(`fedicra.losses.site_contrastive_loss`). Each round trains the head `decoder.out_conv` alone for
`local_steps - rep_iters` steps, then everything else for `rep_iters` steps (FedRep-style, `rep_iters`
resolved as in `fedrep.py`), with the shared AdamW optimizer (upstream uses AdamW for FedLC). The
server averages every registered tensor: personalization comes from the site code fed to the PCS.

Intended (LC-Fed): L_SC is computed by the PCS alone on the detached bottleneck, so its gradient
reaches only the channel-selection module (with the gradient into the encoder, three of five sites
collapsed to Dice 0 at 32 px; quirk 25). `faithful` (FedLPPA v4): the PCS is frozen and unregistered
(model factory), the K-1 other-site attentions come from extra forward passes in train mode with
upstream's site-0 bug, and the whole term is computed under `no_grad`: it changes the logged loss, not
the weights.
"""
from fedicra.fl.hyperparameters import Param
from fedicra.fl.method import Method
from fedicra.fl.personalization import LCFED, REP_ITERS, VALUE_ONLY, body_steps, head_then_body, site_contrast
from fedicra.fl.registry import register


@register
class FedLC(Method):
    name = "fedlc"
    model = "unet_lc"
    hyperparameters = {"alpha": Param(0.5, "weight of the site-contrastive term", low=0), "rep_iters": REP_ITERS}
    description = "Site-coded channel selection with a site-contrastive loss; FedRep-style head/body schedule."

    def resolve(self, config):
        return {"rep_iters": body_steps(self.hp["rep_iters"], config)}

    def trainable(self, client, step_in_round):
        return head_then_body(step_in_round, client.config["local_steps"], self.hp["rep_iters"])

    def loss(self, client, batch, output):
        loss, parts = client.objective(batch, output)
        contrast = site_contrast(client.model, batch["image"], output, VALUE_ONLY if self.faithful else LCFED)
        parts["site_contrast"] = float(contrast.detach())
        return loss + self.hp["alpha"] * contrast, parts
