"""Centralized training on the pooled sites (reference 5.12): one model trained on the union of all
training sets, scored on every site's test set. `centralized` uses each site's assigned weak labels
("CT weak"); `centralized_full` uses full masks, the fully supervised upper bound ("CT full")."""
from fedicra.fl.method import Method
from fedicra.fl.registry import register


@register
class Centralized(Method):
    name = "centralized"
    topology = "pooled"
    has_global_model = False   # the one model is the personalized model of every site
    description = "Pooled training on all sites' weak labels (no federation)."

    def is_personal(self, name: str) -> bool:
        return True

    def aggregate(self, server, replies) -> None:
        pass


@register
class CentralizedFull(Centralized):
    name = "centralized_full"
    labels = "mask"
    description = "Pooled training on full masks: the fully supervised upper bound."
