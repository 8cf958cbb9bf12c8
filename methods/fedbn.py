"""FedBN (Li et al. 2021): every BatchNorm layer (weight, bias, running statistics, counter) stays on
its site; everything else is averaged as in FedAvg (reference 5.3)."""
from fedicra.fl.method import Method
from fedicra.fl.registry import register
from fedicra.models.groups import BATCHNORM


@register
class FedBN(Method):
    name = "fedbn"
    personal_types = (BATCHNORM,)
    description = "FedAvg except BatchNorm layers, which stay local."
