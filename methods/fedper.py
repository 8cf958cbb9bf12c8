"""FedPer (Arivazhagan et al. 2019): the segmentation head stays local, the body is averaged."""
from fedicra.fl.method import Method
from fedicra.fl.registry import register
from fedicra.models.groups import HEAD


@register
class FedPer(Method):
    name = "fedper"
    personal = (HEAD,)
    description = "FedAvg of the body; the output head is personal and trained jointly."
