"""FedAvg (McMahan et al. 2017): every tensor is shared; the server averages the full state dict,
weighted by #training batches as upstream does (`aggregation_weight: cases` weights by images)."""
from fedicra.fl.method import Method
from fedicra.fl.registry import register


@register
class FedAvg(Method):
    name = "fedavg"
    description = "Federated averaging of all parameters and BatchNorm statistics."
