"""FedAP (Lu et al. 2022, adaptive BatchNorm personalization) as run upstream (reference 5.4).

1. Pre-training. Upstream trains one model for `pretrain_iters` = 150 steps on the POOLED training data
   of all sites (SGD lr = base lr, momentum 0.9, weight decay 1e-4, pCE) and starts federated training
   from it. A server here holds no data, so round 1 is a pre-training round instead: every client runs
   `pretrain_steps` such SGD steps from the common initial model on its own data, uploads it (without
   BatchNorm) and the server averages the results into the initial model (one-shot FedAvg, the
   federated stand-in for pooled pre-training). Pre-training does not advance the learning-rate
   schedule's step counter, and round 1 runs no regular local steps, so FedAP gets rounds-1 regular
   rounds. BatchNorm layers never leave a site, so each site keeps its own pre-trained BatchNorm
   (upstream hands everyone the pooled model's). `pretrain_steps: 0` skips pre-training (round 1 is
   then a regular round).
2. In the first regular round every client trains from the pre-trained model, then passes one
   epoch of its training batches through the network (eval mode) and reports, for the input of every
   encoder BatchNorm layer, the per-channel mean and variance (statistics, not parameters, in `extras`).
3. The server sets d_ij = sum over layers of sqrt(||mu_i - mu_j||^2 + ||sd_i - sd_j||^2) (Wasserstein-2
   between per-channel Gaussians), w_ij proportional to 1/d_ij for j != i scaled to sum to 1 - m, and
   w_ii = m (`momentum`, 0.5). The matrix is frozen once computed.
4. From then on the server sends site i its own aggregate sum_j w_ij theta_j of the non-BatchNorm
   tensors; BatchNorm layers stay on the site (as FedBN). No single global model exists.

`faithful` (quirk 17): upstream pools the statistics with weight len(batch) = 3 (the number of keys of
its batch dict) for every batch, i.e. it averages the per-batch means and per-batch variances; intended
pools every pixel of the epoch (exact mean and variance).
"""
from __future__ import annotations

import math

import torch

from fedicra.errors import UserError
from fedicra.fl.method import Method, weighted_average
from fedicra.fl.registry import register
from fedicra.seeding import Stream  # pre-training and statistics batches: their own streams

BATCHNORM = torch.nn.modules.batchnorm._BatchNorm


def encoder_batchnorms(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if n.startswith("encoder.") and isinstance(m, BATCHNORM)]


def bn_input_statistics(client, model: torch.nn.Module, faithful: bool = False) -> dict[str, torch.Tensor]:
    """Per-channel mean and variance of the input of every encoder BatchNorm over one epoch of batches.

    Returns {"<layer>.mean": [C], "<layer>.var": [C]} (float64, CPU).
    """
    layers = encoder_batchnorms(model)
    sums: dict[str, list] = {n: [] for n, _ in layers}   # per batch: (count, sum, sum of squares)

    def hook_for(name):
        def hook(module, inputs):
            x = inputs[0].detach().double()
            sums[name].append((x.numel() // x.shape[1], x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3))))
        return hook

    handles = [m.register_forward_pre_hook(hook_for(n)) for n, m in layers]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for position in range(client.batches_per_epoch):
                batch = client.batch(position, phase=Stream.STATISTICS)
                model(batch["image"])
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    stats = {}
    for name, parts in sums.items():
        if faithful:   # every batch weighs the same: mean of batch means, mean of batch variances
            means = torch.stack([s / n for n, s, _ in parts])
            variances = torch.stack([q / n - (s / n) ** 2 for n, s, q in parts])
            mean, var = means.mean(0), variances.mean(0)
        else:          # pooled over every pixel of the epoch
            count = sum(n for n, _, _ in parts)
            mean = sum(s for _, s, _ in parts) / count
            var = sum(q for _, _, q in parts) / count - mean ** 2
        stats[f"{name}.mean"], stats[f"{name}.var"] = mean.cpu(), var.clamp(min=0).cpu()
    return stats


def bn_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Sum over layers of the Wasserstein-2 distance between per-channel Gaussians."""
    total = 0.0
    for key in a:
        if key.endswith(".mean"):
            layer = key[: -len(".mean")]
            mean_gap = float(((a[key] - b[key]) ** 2).sum())
            sd_gap = float(((a[layer + ".var"].sqrt() - b[layer + ".var"].sqrt()) ** 2).sum())
            total += math.sqrt(mean_gap + sd_gap)
    return total


def similarity_weights(stats: dict[int, dict[str, torch.Tensor]], momentum: float) -> dict[int, dict[int, float]]:
    """Row-stochastic matrix {i: {j: w_ij}}: w_ii = momentum, the rest ~ 1/d_ij summing to 1 - momentum."""
    sites = sorted(stats)
    if len(sites) == 1:
        return {sites[0]: {sites[0]: 1.0}}
    weights = {}
    for i in sites:
        inverse = {j: 1.0 / max(bn_distance(stats[i], stats[j]), 1e-12) for j in sites if j != i}
        total = sum(inverse.values())
        row = {j: (1.0 - momentum) * v / total for j, v in inverse.items()}
        row[i] = momentum
        weights[i] = row
    return weights


def mix(states: dict[int, dict[str, torch.Tensor]], row: dict[int, float]) -> dict[str, torch.Tensor]:
    """sum_j w_ij theta_j over the sites present, renormalised if some site is missing this round."""
    present = [j for j in row if j in states and row[j] > 0]
    return weighted_average([states[j] for j in present], [row[j] for j in present])


@register
class FedAP(Method):
    name = "fedap"
    personal_types = (BATCHNORM,)
    has_global_model = False
    hyperparameters = {"pretrain_steps": 150, "momentum": 0.5}
    description = "Per-site aggregates weighted by BatchNorm-statistics similarity; BatchNorm stays local."

    def __init__(self, params=None, faithful=False):
        super().__init__(params, faithful)
        if self.hp["pretrain_steps"] < 0:
            raise UserError(f"method_params.pretrain_steps: must be >= 0, got {self.hp['pretrain_steps']}")
        if not 0.0 <= self.hp["momentum"] <= 1.0:
            raise UserError(f"method_params.momentum: must be in [0, 1], got {self.hp['momentum']}")

    @property
    def stats_round(self) -> int:
        return 2 if self.hp["pretrain_steps"] > 0 else 1

    # ------------------------------------------------------------------ client
    def train_round(self, client, config):
        if int(config["round"]) == 1 and self.hp["pretrain_steps"] > 0:
            return self.pretrain(client)
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
