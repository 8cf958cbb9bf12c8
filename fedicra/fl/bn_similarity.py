"""Similarity of sites by the input statistics of their encoder BatchNorm layers (FedAP, MetaFed).

A client passes one epoch of its training batches through the network and reports, for the input of
every encoder BatchNorm layer, the per-channel mean and variance (statistics, not parameters). The
server turns them into a row-stochastic matrix: d_ij = sum over layers of the Wasserstein-2 distance
between per-channel Gaussians, w_ij ~ 1/d_ij for j != i scaled to 1 - m, w_ii = m (reference 5.4).
"""
from __future__ import annotations

import math

import torch

from fedicra.fl.method import weighted_average
from fedicra.models.groups import encoder_batchnorms
from fedicra.seeding import Stream  # the statistics pass draws its batches from its own stream



def bn_input_statistics(client, model: torch.nn.Module, faithful: bool = False) -> dict[str, torch.Tensor]:
    """Per-channel mean and variance of the input of every encoder BatchNorm over one epoch of batches.

    Intended: pooled over every pixel of the epoch (exact mean and variance). Faithful (quirk 17):
    upstream combines batches with the same weight each (len of its batch dict, 3), so the mean is
    the mean of the batch means and the variance is the mean of the batch variances plus the
    variance of the batch means between batches (its pairwise combination formula).
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
        if faithful:
            means = torch.stack([s / n for n, s, _ in parts])
            variances = torch.stack([q / n - (s / n) ** 2 for n, s, q in parts])
            mean = means.mean(0)
            var = variances.mean(0) + ((means - mean) ** 2).mean(0)
        else:
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
