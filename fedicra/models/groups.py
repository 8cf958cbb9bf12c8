"""Names of parameter groups that personalization methods keep local, mix, or share.

All functions return names in ``model.state_dict()`` order:
- ``decoder_parameter_names``: parameters of ``decoder.up1..4`` and ``decoder.out_conv`` (the part FedALA and
  FedICRA mix element-wise; aux heads excluded; BatchNorm buffers excluded because they are not parameters).
- ``head_parameter_names``: ``decoder.out_conv`` parameters (FedRep's head).
- ``aux_head_parameter_names``: parameters of the auxiliary DSN heads ``decoder.dsn_head*``.
- ``batchnorm_state_names``: every state_dict entry of a BatchNorm layer (weight, bias, running statistics,
  num_batches_tracked), as FedBN keeps local.
"""
from __future__ import annotations

from torch import nn

_DECODER_BODY = ("decoder.up1.", "decoder.up2.", "decoder.up3.", "decoder.up4.", "decoder.out_conv.")


def decoder_parameter_names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters() if n.startswith(_DECODER_BODY)]


def head_parameter_names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters() if n.startswith("decoder.out_conv.")]


def aux_head_parameter_names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters() if n.startswith("decoder.dsn_head")]


def batchnorm_state_names(model: nn.Module) -> list[str]:
    prefixes = tuple(f"{name}." for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    return [n for n in model.state_dict() if n.startswith(prefixes)]
