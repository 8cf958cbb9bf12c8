"""The upstream 2-D U-Net (channels 16-256) with optional site channel selection and auxiliary heads.

Reference section 3. Module and parameter names follow upstream (``encoder.in_conv``, ``encoder.down1..4``,
``decoder.up1..4``, ``decoder.out_conv``, ``decoder.dsn_head*``) so that upstream checkpoints load.

Upsampling: upstream's configuration says ``bilinear: False`` but never passes it to its up blocks, whose
own default is bilinear; the networks that produced the paper's numbers therefore upsample with a 1x1 conv
(C_in->C_skip, ``decoder.upK.conv1x1``) followed by bilinear x2 interpolation (align_corners=True).
``upsample="bilinear"`` (default) reproduces that and loads upstream checkpoints; ``upsample="transpose"``
gives the transposed-conv decoder the configuration intended (``decoder.upK.up`` = ConvTranspose2d(2, 2)).

Site channel selection (PCS, ``channel_selection.py``) sits on the bottleneck as ``encoder.pcs``:
``channel_selection="trainable"`` registers it like any other layer; ``"frozen"`` reproduces upstream,
which kept it in a plain Python list: not in ``state_dict``/``parameters()``, never trained or sent, and
randomly initialised from a fixed seed (2022) so that every build gets the same weights.
"""
from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import nn

from fedicra.errors import UserError
from fedicra.models.channel_selection import PersonalizedChannelSelection, one_hot_sites

FEATURE_CHANNELS = (16, 32, 64, 128, 256)
ENCODER_DROPOUT = (0.05, 0.1, 0.2, 0.3, 0.5)
UPSAMPLE_MODES = ("bilinear", "transpose")
CHANNEL_SELECTION_MODES = (None, "trainable", "frozen")


class ConvBlock(nn.Module):
    """Conv3x3-BN-LeakyReLU(0.01)-Dropout-Conv3x3-BN-LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.conv_conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.01),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.01),
        )

    def forward(self, x):
        return self.conv_conv(x)


class DownBlock(nn.Module):
    """MaxPool 2x2 then ConvBlock."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), ConvBlock(in_channels, out_channels, dropout))

    def forward(self, x):
        return self.maxpool_conv(x)


class UpBlock(nn.Module):
    """Upsample x2 to the skip's channel count, concatenate [skip, up], ConvBlock."""

    def __init__(self, in_channels: int, skip_channels: int, upsample: str):
        super().__init__()
        self.bilinear = upsample == "bilinear"
        if self.bilinear:
            self.conv1x1 = nn.Conv2d(in_channels, skip_channels, kernel_size=1)
        else:
            self.up = nn.ConvTranspose2d(in_channels, skip_channels, kernel_size=2, stride=2)
        self.conv = ConvBlock(2 * skip_channels, skip_channels, dropout=0.0)

    def forward(self, x, skip):
        if self.bilinear:
            x = F.interpolate(self.conv1x1(x), scale_factor=2, mode="bilinear", align_corners=True)
        else:
            x = self.up(x)
        return self.conv(torch.cat([skip, x], dim=1))


def aux_head(in_channels: int, num_classes: int) -> nn.Sequential:
    """DSN head: Conv3x3(C->512)-BN-ReLU-Dropout2d(0.1)-Conv1x1(512->classes, no bias); raw logits."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 512, kernel_size=3, padding=1),
        nn.BatchNorm2d(512),
        nn.ReLU(),
        nn.Dropout2d(0.1),
        nn.Conv2d(512, num_classes, kernel_size=1, bias=False),
    )


class Encoder(nn.Module):
    def __init__(self, in_channels: int, channel_selection: str | None, num_sites: int):
        super().__init__()
        c, p = FEATURE_CHANNELS, ENCODER_DROPOUT
        self.in_conv = ConvBlock(in_channels, c[0], p[0])
        self.down1 = DownBlock(c[0], c[1], p[1])
        self.down2 = DownBlock(c[1], c[2], p[2])
        self.down3 = DownBlock(c[2], c[3], p[3])
        self.down4 = DownBlock(c[3], c[4], p[4])
        self._unregistered: list[nn.Module] = []  # the frozen PCS lives here, out of state_dict
        if channel_selection == "trainable":
            self.pcs = PersonalizedChannelSelection(c[4], num_sites)
        elif channel_selection == "frozen":
            with torch.random.fork_rng(devices=[]):  # leave the global CPU RNG as a PCS-free build would
                pcs = PersonalizedChannelSelection(c[4], num_sites)
            pcs.reset_parameters_seeded()
            pcs.requires_grad_(False)
            self._unregistered.append(pcs)

    @property
    def channel_selection(self) -> PersonalizedChannelSelection | None:
        if self._unregistered:
            return self._unregistered[0]
        return getattr(self, "pcs", None)

    def _apply(self, fn, recurse=True):
        # .to()/.cuda()/.double() must also reach the unregistered PCS.
        super()._apply(fn, recurse)
        for module in self._unregistered:
            module._apply(fn, recurse)
        return self

    def forward(self, x):
        x0 = self.in_conv(x)
        x1 = self.down1(x0)
        x2 = self.down2(x1)
        x3 = self.down3(x2)
        return [x0, x1, x2, x3, self.down4(x3)]


class Decoder(nn.Module):
    def __init__(self, num_classes: int, upsample: str, aux_heads: dict[str, int]):
        super().__init__()
        c = FEATURE_CHANNELS
        self.up1 = UpBlock(c[4], c[3], upsample)
        self.up2 = UpBlock(c[3], c[2], upsample)
        self.up3 = UpBlock(c[2], c[1], upsample)
        self.up4 = UpBlock(c[1], c[0], upsample)
        self.out_conv = nn.Conv2d(c[0], num_classes, kernel_size=3, padding=1)
        # decoder level k (1..4) has c[4-k] channels: d1 128, d2 64, d3 32, d4 16
        self.aux_levels = dict(aux_heads)
        for name, level in self.aux_levels.items():
            self.add_module(name, aux_head(c[4 - level], num_classes))

    def forward(self, features, with_aux: bool = True):
        x0, x1, x2, x3, x4 = features
        d1 = self.up1(x4, x3)
        d2 = self.up2(d1, x2)
        d3 = self.up3(d2, x1)
        d4 = self.up4(d3, x0)
        levels = [d1, d2, d3, d4]
        aux = [getattr(self, name)(levels[level - 1]) for name, level in self.aux_levels.items()] if with_aux else []
        return self.out_conv(d4), levels, aux


class UNet(nn.Module):
    """U-Net with optional site channel selection (PCS) and auxiliary DSN heads.

    ``forward(x, site=None)`` returns a dict:
      logits     [B,classes,H,W] main output;
      aux        list of raw aux-head logits, in ``aux_heads`` order (empty without heads);
      attention  [B,256,1,1] PCS channel attention, or None without PCS;
      bottleneck [B,256,H/16,W/16] encoder output before PCS;
      features   encoder features [x0..x4] (x4 after PCS); decoder: [d1..d4].
    ``site`` (default ``self.site``) picks the one-hot site code; models without PCS ignore it.
    ``aux=False`` skips the aux heads (they only guide training losses; inference does not need them).
    H and W must be multiples of 16.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_sites: int = 1,
        site: int = 0,
        channel_selection: str | None = None,
        aux_heads: dict[str, int] | None = None,
        upsample: str = "bilinear",
    ):
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise UserError(f"model option upsample={upsample!r} is unknown; valid: {', '.join(UPSAMPLE_MODES)}")
        if channel_selection not in CHANNEL_SELECTION_MODES:
            raise UserError(f"model option channel_selection={channel_selection!r} is unknown; valid: "
                            "None, trainable, frozen")
        for option, value in (("in_channels", in_channels), ("num_classes", num_classes), ("num_sites", num_sites)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise UserError(f"model option {option}={value!r} must be a positive integer")
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.num_sites = int(num_sites)
        self.site = self._check_site(site)
        self.encoder = Encoder(in_channels, channel_selection, self.num_sites)
        self.decoder = Decoder(num_classes, upsample, aux_heads or {})

    @property
    def channel_selection(self) -> PersonalizedChannelSelection | None:
        return self.encoder.channel_selection

    @property
    def site(self) -> int:
        """Default site index used by ``forward`` when no site is given."""
        return self._site

    @site.setter
    def site(self, value) -> None:
        self._site = self._check_site(value)

    def _check_site(self, site) -> int:
        if not isinstance(site, numbers.Integral) or isinstance(site, bool) or not 0 <= site < self.num_sites:
            raise UserError(f"model option site={site!r} must be an integer in [0, {self.num_sites - 1}] "
                            f"(num_sites={self.num_sites})")
        return int(site)

    def _site_code(self, site, like: torch.Tensor) -> torch.Tensor:
        site = self.site if site is None else self._check_site(site)
        return one_hot_sites(site, self.num_sites, like.shape[0], like.device, like.dtype)

    def forward(self, x: torch.Tensor, site: int | None = None, aux: bool = True) -> dict:
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2] % 16 or x.shape[3] % 16:
            raise UserError(f"model input has shape {tuple(x.shape)}; expected [B,{self.in_channels},H,W] "
                            "with H and W multiples of 16")
        features = self.encoder(x)
        bottleneck = features[4]
        attention = None
        pcs = self.channel_selection
        if pcs is not None:
            features[4], attention = pcs(bottleneck, self._site_code(site, bottleneck))
        elif site is not None:
            self._check_site(site)
        logits, decoder, aux_logits = self.decoder(features, with_aux=aux)
        return {"logits": logits, "aux": aux_logits, "attention": attention, "bottleneck": bottleneck,
                "features": features, "decoder": decoder}

    def site_attention(self, bottleneck: torch.Tensor, site: int) -> torch.Tensor:
        """PCS attention [B,256,1,1] that site code ``site`` gives on ``bottleneck`` (pre-PCS features).

        Equals ``forward(x, site=site)["attention"]`` for the same encoder pass, without re-running the
        encoder, dropout or BatchNorm. (Upstream's contrastive loss used ``site or own_site``, so site 0
        silently meant the own site; that bug is reproduced by the caller if wanted, not here.)
        """
        pcs = self.channel_selection
        if pcs is None:
            raise UserError("site_attention needs a model with channel selection (unet_lc, unet_lc_multihead)")
        return pcs.attention(bottleneck, self._site_code(site, bottleneck))
