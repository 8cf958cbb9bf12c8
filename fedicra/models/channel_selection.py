"""Personalized channel selection (PCS): site-conditioned channel attention on the U-Net bottleneck.

Reference section 3.3 (origin: LC-Fed). For features x [B,C,h,w] and a one-hot site vector e [B,K]:

    s = fc1(e)                          fc1 = Conv1x1(K->C) -> ReLU -> Conv1x1(C->C), no bias
    h = sigmoid(fc2([avg(x); s]) + fc2([max(x); s]))
                                        fc2 = Conv1x1(2C->C/16) -> ReLU -> Conv1x1(C/16->C), no bias
    x' = x * h + x                      residual channel re-weighting

The site enters the network only here, so the attention another site code would give on the same batch
needs this small module again, not another encoder pass (see ``UNet.site_attention``).
"""
from __future__ import annotations

import math

import torch
from torch import nn

# Upstream seeds every process with 2022 before building the net; the frozen (faithful) PCS weights are
# drawn from a private generator with this seed so that they do not depend on what was built before.
FAITHFUL_PCS_SEED = 2022


class PersonalizedChannelSelection(nn.Module):
    """Channel attention conditioned on a one-hot site code; parameter names follow upstream."""

    def __init__(self, channels: int, num_sites: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Sequential(
            nn.Conv2d(num_sites, channels, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1, bias=False),
        )
        self.fc2 = nn.Sequential(
            nn.Conv2d(2 * channels, channels // reduction, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(channels // reduction, channels, 1, bias=False),
        )

    def attention(self, x: torch.Tensor, site_code: torch.Tensor) -> torch.Tensor:
        """Channel attention h in (0, 1), shape [B,C,1,1], for features x and site codes [B,K]."""
        s = self.fc1(site_code[:, :, None, None].to(x.dtype))
        avg = torch.mean(x, dim=(2, 3), keepdim=True)
        peak = torch.amax(x, dim=(2, 3), keepdim=True)
        return torch.sigmoid(self.fc2(torch.cat([avg, s], 1)) + self.fc2(torch.cat([peak, s], 1)))

    def forward(self, x: torch.Tensor, site_code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.attention(x, site_code)
        return x * h + x, h

    def reset_parameters_seeded(self, seed: int = FAITHFUL_PCS_SEED) -> None:
        """Re-draw all weights with PyTorch's default conv init from a private generator (global RNG untouched)."""
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    # Same distribution as nn.Conv2d.reset_parameters (bias-free convs here).
                    nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)


def one_hot_sites(site: int, num_sites: int, batch: int, device, dtype=torch.float32) -> torch.Tensor:
    """[batch, num_sites] one-hot codes of one site index."""
    code = torch.zeros(batch, num_sites, device=device, dtype=dtype)
    code[:, site] = 1
    return code
