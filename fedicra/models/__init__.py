"""Segmentation networks and the factory that builds them by name.

Names (reference 3.4): ``unet`` plain U-Net; ``unet_multihead`` aux heads on d2, d3, d4 (what the tree
energy objective needs, e.g. FedAvg on FedICRA's objective); ``unet_lc`` site channel selection (PCS) + one aux head on d2; ``unet_lc_multihead`` PCS + three
aux heads (the FedICRA model). Aux head names follow upstream: ``decoder.dsn_head`` for the single head,
``decoder.dsn_head1..3`` for the three heads.
"""
from __future__ import annotations

from fedicra.errors import UserError
from fedicra.models.groups import (
    aux_head_parameter_names,
    batchnorm_state_names,
    decoder_parameter_names,
    head_parameter_names,
)
from fedicra.models.unet import UNet

# name -> (has site channel selection, aux heads {module name: decoder level})
_SPECS = {
    "unet": (False, {}),
    "unet_multihead": (False, {"dsn_head1": 2, "dsn_head2": 3, "dsn_head3": 4}),
    "unet_lc": (True, {"dsn_head": 2}),
    "unet_lc_multihead": (True, {"dsn_head1": 2, "dsn_head2": 3, "dsn_head3": 4}),
}
MODEL_NAMES = tuple(_SPECS)


def build_model(name: str, in_channels: int, num_classes: int, num_sites: int = 1, site: int = 0,
                faithful: bool = False, upsample: str = "bilinear") -> UNet:
    """Build network ``name``. ``faithful`` freezes the PCS as upstream did (unregistered, seeded random
    weights); otherwise the PCS is an ordinary trainable layer. ``upsample``: see ``fedicra.models.unet``."""
    if name not in _SPECS:
        raise UserError(f"model {name!r} is unknown; valid models: {', '.join(MODEL_NAMES)}")
    has_pcs, heads = _SPECS[name]
    selection = ("frozen" if faithful else "trainable") if has_pcs else None
    return UNet(in_channels, num_classes, num_sites=num_sites, site=site, channel_selection=selection,
                aux_heads=heads, upsample=upsample)


__all__ = ["MODEL_NAMES", "UNet", "build_model", "decoder_parameter_names", "head_parameter_names",
           "aux_head_parameter_names", "batchnorm_state_names"]
