"""The DCGAN-style discriminator AdvGAN trains against (Xiao et al., IJCAI 2018; Radford et al., ICLR 2016).

Three stride-2 4x4 convolutions (``ndf``, ``2 ndf``, ``4 ndf`` filters; LeakyReLU 0.2; batch normalisation after
all but the first, as DCGAN), a 1x1 convolution to one channel and the mean over the remaining positions: one logit
per image, "real" (a clean image) when positive. ``ndf = 8`` follows the MNIST discriminator of the AdvGAN
PyTorch reimplementation (github mathcbc/advGAN_pytorch, widths 8, 16, 32). It is used only while training a
generator (:mod:`advkit.train.advgan`) and is not saved.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Discriminator"]


class Discriminator(nn.Module):
    """``(N, C, H, W)`` pixels in ``[0, 1]`` to ``(N,)`` logits of "this is a clean image".

    Args:
        channels: image channels.
        ndf: filters of the first convolution (doubled twice).
    """

    def __init__(self, channels: int = 1, ndf: int = 8) -> None:
        super().__init__()
        if ndf < 1:
            raise ValueError(f"the discriminator's width ndf must be >= 1, got {ndf}")
        self.net = nn.Sequential(
            nn.Conv2d(channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, 2 * ndf, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * ndf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * ndf, 4 * ndf, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(4 * ndf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(4 * ndf, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean(dim=(1, 2, 3))
