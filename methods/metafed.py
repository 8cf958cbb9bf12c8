"""MetaFed (Chen et al. 2022, cyclic knowledge distillation) as run upstream (reference 5.8), federated.

Every client keeps its own model; the server relays models and never averages into one global model.
  * Round 1 (warm-up): everyone loads the initial model.
  * Common-knowledge phase (rounds <= `common_rounds`, upstream 400 iterations = 40 of 3,000 rounds;
    intended: the same fraction of the run, at least 2 and at most rounds - 1 so that both phases
    happen, quirk 26): the server
    ranks sites by performance = validation Dice + `uncertainty_weight` / uncertainty (both reported by
    the clients after local training) and gives each site the model of the next-better site in that
    cyclic order as its teacher. A client whose teacher scores at least as well on the client's own
    validation split copies the teacher's weights (a tie copies, as upstream's `meta_flag`); otherwise it keeps its own and distils from the teacher with
    strength `lam`.
  * Personalization phase: the teacher of site i is sum_j w_ij theta_j with FedAP's BatchNorm-similarity
    matrix (momentum 0.5), computed once from encoder BatchNorm statistics the clients report at the end
    of round `common_rounds`. The client keeps its model; lambda = 0 if the teacher is not better on its
    validation split, else 10^min(1, 5*(dice_teacher - dice_own)) / 10 * `lam`.
  * Distillation (only after round `distill_after_rounds`, upstream 100 iterations = 10 rounds;
    intended: the same fraction of the run, below `common_rounds`):
    loss += lambda * KL(teacher || student) of the softmax outputs (element-wise mean, as upstream's
    `F.kl_div`) + `beta` * sum of MSEs between student and teacher encoder features.
  * Uncertainty: at every training step, mean predictive entropy of the average softmax over 8 passes of
    the batch rotated by a random multiple of 90 degrees with Gaussian noise N(0, 0.1^2) clipped to
    +-0.2 (upstream's procedure); averaged over the round.

Deviations (documented): teacher-versus-student comparisons use both models' Dice on the client's own
validation split (the MetaFed paper's rule; upstream compares numbers each site measured on its own data);
the server sends each site only its teacher, not every model; the BatchNorm statistics are taken at the
end of the last common round rather than one round later. `faithful`: the distillation terms are detached
as upstream (they change the reported loss but give no gradient), and the uncertainty passes run in train
mode (dropout on, BatchNorm running statistics updated) as upstream; intended runs them in eval mode.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from fedicra.errors import UserError
from fedicra.fl import schedule
from fedicra.fl.bn_similarity import bn_input_statistics, mix, similarity_weights
from fedicra.fl.hyperparameters import Param
from fedicra.fl.method import Method, load_shared
from fedicra.fl.registry import register

TEACHER = "teacher."
PHASE = "metafed.phase"
WARMUP, COMMON, PERSONAL = 0, 1, 2
UNCERTAINTY_PASSES = 8


def teacher_order(performance: dict[int, float]) -> dict[int, int]:
    """Teacher of each site: the next-better site in the cyclic order by performance (best -> worst)."""
    ranked = sorted(performance, key=lambda site: (performance[site], site))
    return {site: ranked[(i + 1) % len(ranked)] for i, site in enumerate(ranked)}


def distillation_strength(own_dice: float, teacher_dice: float, lam: float) -> float:
    """Personalization-phase lambda: 0 unless the teacher is better, then 10^min(1, 5*gap) / 10 * lam."""
    gap = teacher_dice - own_dice
    return 0.0 if gap <= 0 else 10 ** min(1.0, 5.0 * gap) / 10.0 * lam


def predictive_uncertainty(model: torch.nn.Module, image: torch.Tensor, train_mode: bool) -> float:
    """Mean entropy of the average softmax over noisy passes of the batch rotated by k*90 degrees."""
    was_training = model.training
    model.train(train_mode)
    with torch.no_grad():
        rotated = torch.rot90(image, int(torch.randint(0, 4, ())), dims=(2, 3))
        probs = 0.0
        for _ in range(UNCERTAINTY_PASSES):
            noisy = rotated + torch.clamp(torch.randn_like(rotated) * 0.1, -0.2, 0.2)
            probs = probs + torch.softmax(model(noisy)["logits"], dim=1) / UNCERTAINTY_PASSES
        entropy = -(probs * torch.log(probs + 1e-6)).sum(dim=1)
    model.train(was_training)
    return float(entropy.mean())


@register
class MetaFed(Method):
    name = "metafed"
    has_global_model = False
    new_site = False   # no global model, and the final round sends nothing: every site keeps its own
    hyperparameters = {
        "common_rounds": Param(None, "last round of the common-knowledge phase (upstream 40 of 3,000; "
                                     "null = the same fraction of the run)", kind=int, low=1),
        "distill_after_rounds": Param(None, "distil only after this round (upstream 10 of 3,000; null = the "
                                            "same fraction of the run)", kind=int, low=0),
        "lam": Param(0.5, "distillation strength (KL term)", low=0),
        "beta": Param(0.5, "weight of the feature MSE of the distillation", low=0),
        "uncertainty_weight": Param(0.5, "weight of 1/uncertainty in the performance that ranks sites", low=0),
        "momentum": Param(0.5, "weight of a site's own model in its personalized teacher", low=0, high=1),
    }
    description = "Cyclic knowledge distillation between site models, then similarity-weighted teachers."

    def resolve(self, config):
        common = self.hp["common_rounds"]
        if common is None:
            common = schedule.rounds(40, config, low=2, high=config["rounds"] - 1)
        return {"common_rounds": common,
                "distill_after_rounds": schedule.rounds(10, config, low=0, high=common - 1)}

    # ------------------------------------------------------------------ client
    def _val_dice(self, client, model) -> float:
        site = client.data[0]
        if not len(site.val):
            raise UserError("metafed: needs a validation split to compare teachers (set val_fraction > 0)")
        return float(client.score(model, "val", site)["mean_dice"].mean())

    def receive(self, client, arrays) -> None:
        client.state.update(lam=0.0, teacher=None, own_dice=0.0, teacher_dice=0.0)
        if not arrays:
            return
        phase = int(arrays[PHASE])
        client.state["phase"] = phase
        teacher_state = {k[len(TEACHER):]: v for k, v in arrays.items() if k.startswith(TEACHER)}
        if phase == WARMUP:
            load_shared(client.model, teacher_state, lambda name: False)
            return
        teacher = copy.deepcopy(client.model)
        load_shared(teacher, teacher_state, lambda name: False)
        own = client.state.get("val_dice")
        own = self._val_dice(client, client.model) if own is None else own
        better = self._val_dice(client, teacher)
        client.state.update(own_dice=own, teacher_dice=better)
        if phase == COMMON:
            if better >= own:   # the teacher knows at least as much: take it over (upstream on a tie too)
                load_shared(client.model, teacher_state, lambda name: False)
                return
            lam = self.hp["lam"]
        else:
            lam = distillation_strength(own, better, self.hp["lam"])
        client.state["lam"] = lam
        if lam > 0:
            client.state["teacher"] = {k: v.detach().clone() for k, v in teacher.state_dict().items()}

    def train_round(self, client, config):
        round_ = int(config["round"])
        teacher = None
        if client.state.get("teacher") is not None and round_ > self.hp["distill_after_rounds"]:
            teacher = copy.deepcopy(client.model)
            teacher.load_state_dict(client.state["teacher"])
            teacher.eval()
        lam, beta = client.state.get("lam", 0.0), self.hp["beta"]
        uncertainties: list[float] = []

        def loss_fn(batch, output):
            loss, parts = self.loss(client, batch, output)
            uncertainties.append(predictive_uncertainty(client.model, batch["image"], train_mode=self.faithful))
            if teacher is None:
                return loss, parts
            with torch.no_grad():
                target = teacher(batch["image"])
            # KL(teacher || student) averaged over every element, as upstream's F.kl_div(reduction="mean")
            log_teacher = torch.log_softmax(target["logits"], dim=1)
            kl = (log_teacher.exp() * (log_teacher - torch.log_softmax(output["logits"], dim=1))).mean()
            feature = sum(F.mse_loss(s, t) for s, t in zip(output["features"], target["features"]))
            if self.faithful:   # upstream detaches both terms: they move the loss value, not the weights
                kl, feature = kl.detach(), feature.detach()
            parts.update(distill_kl=float(kl.detach()), distill_feature=float(feature.detach()), lam=lam)
            return loss + lam * kl + beta * feature, parts

        metrics = client.train_steps(client.model, config["local_steps"], loss_fn=loss_fn)
        client.state["teacher"] = None
        client.state["val_dice"] = self._val_dice(client, client.model)
        client.state["send_stats"] = round_ == self.hp["common_rounds"]
        gap = client.state.get("teacher_dice", 0.0) - client.state.get("own_dice", 0.0)
        metrics.update(phase=float(client.state.get("phase", WARMUP)), distilled=float(teacher is not None),
                       teacher_gap=float(gap),
                       val_dice=client.state["val_dice"],
                       uncertainty=sum(uncertainties) / max(1, len(uncertainties)))
        return metrics

    def client_extras(self, client):
        if not client.state.pop("send_stats", False):
            return {}
        return bn_input_statistics(client, client.model, faithful=False)

    # ------------------------------------------------------------------ server
    def init_server(self, server) -> None:
        server.state.update(models={}, performance={}, weights=None)

    def aggregate(self, server, replies) -> None:
        for r in replies:
            server.state["models"][r.site] = r.arrays
            uncertainty = max(float(r.metrics.get("uncertainty", 1.0)), 1e-6)
            server.state["performance"][r.site] = (float(r.metrics.get("val_dice", 0.0))
                                                   + self.hp["uncertainty_weight"] / uncertainty)
        stats = {r.site: r.extras for r in replies if r.extras}
        if server.state["weights"] is None and stats:
            server.state["weights"] = similarity_weights(stats, self.hp["momentum"])

    def payload(self, server, site):
        if server.round >= server.config["rounds"]:
            return {}   # final test: every site is scored with its own model
        models, weights = server.state["models"], server.state["weights"]
        if server.round == 0 or site not in models:
            teacher, phase = server.global_state, WARMUP
        elif server.round < self.hp["common_rounds"] or weights is None or site not in weights:
            teacher, phase = models[teacher_order(server.state["performance"])[site]], COMMON
        else:
            teacher, phase = mix(models, weights[site]), PERSONAL
        return {**{TEACHER + k: v for k, v in teacher.items()}, PHASE: torch.tensor(phase)}
