"""Parameter groups of the U-Net, defined once and used by every method and by ALA.

Each group is a predicate on state-dict / parameter names (or, for BatchNorm, on modules), plus a
helper listing the names of a model in ``state_dict()`` order:
- head: ``decoder.out_conv`` (FedRep's and FedPer's personal head, the head of the head/body schedule);
- decoder: ``decoder.up1..4`` + ``decoder.out_conv`` (the set FedALA and FedICRA mix element-wise; the
  auxiliary heads are not in it; BatchNorm buffers are not parameters, so they are not in it either);
- aux heads: ``decoder.dsn_head*`` (the tree-energy heads);
- BatchNorm: every BatchNorm module (FedBN and FedAP keep them local); ``encoder_batchnorms`` are the
  encoder's, whose input statistics FedAP and MetaFed compare between sites.
"""
from __future__ import annotations

from torch import nn

HEAD = "decoder.out_conv"
DECODER_BODY = ("decoder.up1.", "decoder.up2.", "decoder.up3.", "decoder.up4.", HEAD + ".")
AUX_HEADS = "decoder.dsn_head"
BATCHNORM = nn.modules.batchnorm._BatchNorm


def is_head(name: str) -> bool:
    return name.startswith(HEAD + ".")


def is_decoder(name: str) -> bool:
    return name.startswith(DECODER_BODY)


def is_aux_head(name: str) -> bool:
    return name.startswith(AUX_HEADS)


def decoder_parameter_names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters() if is_decoder(n)]


def head_parameter_names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters() if is_head(n)]


def aux_head_parameter_names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters() if is_aux_head(n)]


def batchnorm_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BATCHNORM)]


def encoder_batchnorms(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in batchnorm_modules(model) if n.startswith("encoder.")]


def batchnorm_state_names(model: nn.Module) -> list[str]:
    prefixes = tuple(f"{name}." for name, _ in batchnorm_modules(model))
    return [n for n in model.state_dict() if n.startswith(prefixes)]
