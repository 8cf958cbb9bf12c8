"""Weak-supervision losses of FedICRA: partial CE, gated CRF, tree filter + multiscale tree energy,
and the channel-selection site contrastive loss (reference section 4)."""
from fedicra.losses.gated_crf import gated_crf_loss
from fedicra.losses.partial_ce import partial_cross_entropy
from fedicra.losses.site_contrastive import site_contrastive_loss
from fedicra.losses.spanning_tree import SpanningForest, build_spanning_forest
from fedicra.losses.tree_energy import tree_energy_loss
from fedicra.losses.tree_filter import tree_filter

__all__ = [
    "SpanningForest",
    "build_spanning_forest",
    "gated_crf_loss",
    "partial_cross_entropy",
    "site_contrastive_loss",
    "tree_energy_loss",
    "tree_filter",
]
