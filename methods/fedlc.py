"""FedLC (LC-Fed, Wang et al. MICCAI 2022) as run upstream (reference 5.6, 4.5).

Model `unet_lc`: personalized channel selection (PCS) on the bottleneck, driven by a one-hot site code.
Loss = shared objective + alpha * L_SC, the site-contrastive term that pushes this site's channel
attention away from the attention every other site code gives on the same batch
(`fedicra.losses.site_contrastive_loss`). Each round trains the head `decoder.out_conv` alone for
`local_steps - rep_iters` steps, then everything else for `rep_iters` steps (FedRep-style), with the
shared AdamW optimizer (upstream uses AdamW for FedLC, SGD only for FedRep). The server averages every
registered tensor: personalization comes from the site code fed to the PCS.

Intended: the other sites' attentions come from the PCS alone on this pass's bottleneck
(`model.site_attention`), one encoder pass per step. `faithful` (upstream): the PCS is frozen and
unregistered (model factory), and the K-1 other-site attentions come from full extra forward passes in
train mode (BatchNorm statistics updated, fresh dropout) with upstream's site-0 bug: site code 0 is
tested for truthiness, so "site 0" silently uses the client's own code.
"""
from fedicra.fl.method import Method
from fedicra.fl.personalization import head_then_body, site_contrast
from fedicra.fl.registry import register


@register
class FedLC(Method):
    name = "fedlc"
    model = "unet_lc"
    hyperparameters = {"alpha": 0.5, "rep_iters": 3}
    description = "Site-coded channel selection with a site-contrastive loss; FedRep-style head/body schedule."

    def trainable(self, client, step_in_round):
        return head_then_body(step_in_round, client.config["local_steps"], self.hp["rep_iters"])

    def loss(self, client, batch, output):
        loss, parts = client.objective(batch, output)
        contrast = site_contrast(client.model, batch["image"], output, self.faithful)
        parts["site_contrast"] = float(contrast.detach())
        return loss + self.hp["alpha"] * contrast, parts
