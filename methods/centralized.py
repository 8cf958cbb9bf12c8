"""Centralized training on the pooled sites (reference 5.12): one model trained on the union of all
training sets, scored on every site's test set. `centralized` uses each site's assigned weak labels
("CT weak"); `centralized_full` uses full masks, the fully supervised upper bound ("CT full")."""
from fedicra.fl.method import NoExchange
from fedicra.fl.registry import register


@register
class Centralized(NoExchange):
    name = "centralized"
    topology = "pooled"
    description = "Pooled training on all sites' weak labels (no federation)."


@register
class CentralizedFull(Centralized):
    name = "centralized_full"
    labels = "mask"
    description = "Pooled training on full masks: the fully supervised upper bound."
