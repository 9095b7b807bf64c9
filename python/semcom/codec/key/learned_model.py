"""The torch side of the learned key-tile codec: analysis/synthesis transforms and the training prior.

A factorized-prior autoencoder after Ballé et al. 2017 ("End-to-end optimized image compression"),
made small enough to train on two CPU cores: log2(``downsample``) stride-2 5x5 convolutions with GDN
to latents of ``latent_channels`` channels at 1/``downsample`` of the tile's resolution, and the mirror
image with inverse GDN.

Shapes: images (B, 3, H, W) float32 in [0, 1] with H, W multiples of ``downsample``;
latents (B, M, H/downsample, W/downsample).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class LearnedCodecConfig:
    channels: int = 64          # N, width of the hidden layers
    latent_channels: int = 96   # M, channels of the coded latents
    downsample: int = 16        # latents at 1/downsample of the tile's side: 8 or 16 (3 or 4 stride-2 layers)

    def __post_init__(self):
        if self.downsample not in (8, 16):
            raise ValueError(f"downsample must be 8 or 16, got {self.downsample}")

    def to_dict(self) -> dict:
        return asdict(self)


class GDN(nn.Module):
    """Generalized divisive normalization: y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2) (inverse: times)."""

    def __init__(self, channels: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(0.1 * torch.eye(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # |.| keeps the parameters non-negative; the small floor keeps the root away from zero.
        beta = self.beta.abs() + 1e-6
        gamma = self.gamma.abs()
        norm = torch.sqrt(F.conv2d(x * x, gamma[:, :, None, None], beta))
        return x * norm if self.inverse else x / norm


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 5, stride=2, padding=2)


def _deconv(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1)


class TileAutoencoder(nn.Module):
    """Analysis transform ``encode`` and synthesis transform ``decode``, plus a per-channel Laplace prior
    used only for the training rate term (the coder uses tables fitted after training)."""

    def __init__(self, config: LearnedCodecConfig | None = None):
        super().__init__()
        self.config = config or LearnedCodecConfig()
        n, m = self.config.channels, self.config.latent_channels
        hidden = self.config.downsample.bit_length() - 2       # stride-2 layers between input and latents
        analysis: list[nn.Module] = [_conv(3, n), GDN(n)]
        synthesis: list[nn.Module] = [_deconv(m, n), GDN(n, True)]
        for _ in range(hidden - 1):
            analysis += [_conv(n, n), GDN(n)]
            synthesis += [_deconv(n, n), GDN(n, True)]
        self.analysis = nn.Sequential(*analysis, _conv(n, m))
        self.synthesis = nn.Sequential(*synthesis, _deconv(n, 3))
        self.prior_log_scale = nn.Parameter(torch.zeros(m))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.analysis(images - 0.5)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.synthesis(latents) + 0.5

    def rate_bits(self, noisy_latents: torch.Tensor, step: float | torch.Tensor) -> torch.Tensor:
        """Bits of noisy latents under the Laplace prior convolved with a uniform of width ``step``; (B,)."""
        scale = self.prior_log_scale.exp()[None, :, None, None]

        def cdf(v):
            return 0.5 + 0.5 * torch.sign(v) * (1 - torch.exp(-v.abs() / scale))

        # Use the upper tail where it is small, so the difference keeps precision.
        v = -noisy_latents.abs()
        p = cdf(v + step / 2) - cdf(v - step / 2)
        return -(torch.log(p.clamp_min(1e-9)) / math.log(2)).flatten(1).sum(1)
