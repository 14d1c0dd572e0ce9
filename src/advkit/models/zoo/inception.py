"""Inception networks for 28-32 px inputs: a GoogLeNet-style net without skip connections (Szegedy et al. 2015)
and an Inception-ResNet with scaled residuals (Szegedy et al. 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _cbr(c_in: int, c_out: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class InceptionModule(nn.Module):
    """Four parallel paths (1x1; 1x1-3x3; 1x1-3x3-3x3; pool-1x1) concatenated. No skip connection."""

    def __init__(self, c_in: int, c1: int, c3: int, c5: int, cp: int) -> None:
        super().__init__()
        self.b1 = _cbr(c_in, c1, 1)
        self.b3 = nn.Sequential(_cbr(c_in, c3 // 2, 1), _cbr(c3 // 2, c3, 3))
        self.b5 = nn.Sequential(_cbr(c_in, c5 // 2, 1), _cbr(c5 // 2, c5, 3), _cbr(c5, c5, 3))
        self.bp = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), _cbr(c_in, cp, 1))
        self.out_channels = c1 + c3 + c5 + cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], 1)


class InceptionNet(nn.Module):
    """A small GoogLeNet: stem, two Inception modules, pool, two Inception modules, pool, one more, classifier."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        self.stem = _cbr(in_channels, 32, 3)
        mods: list[nn.Module] = []
        c = 32
        for spec in [(16, 24, 8, 8), (24, 32, 12, 12), "pool", (32, 48, 16, 16), (32, 48, 16, 16), "pool",
                     (48, 64, 24, 24)]:
            if spec == "pool":
                mods.append(nn.MaxPool2d(2))
                continue
            m = InceptionModule(c, *spec)  # type: ignore[misc,arg-type]
            mods.append(m)
            c = m.out_channels
        self.blocks = nn.Sequential(*mods)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


class InceptionResBlock(nn.Module):
    """Inception-ResNet block: ``relu(x + scale * conv1x1(cat(paths(x))))`` with a fixed residual scale."""

    def __init__(self, channels: int, scale: float = 0.2) -> None:
        super().__init__()
        c = channels // 4
        self.b1 = _cbr(channels, c, 1)
        self.b3 = nn.Sequential(_cbr(channels, c, 1), _cbr(c, c, 3))
        self.b5 = nn.Sequential(_cbr(channels, c, 1), _cbr(c, c, 3), _cbr(c, c, 3))
        self.up = nn.Conv2d(3 * c, channels, 1)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.up(torch.cat([self.b1(x), self.b3(x), self.b5(x)], 1))
        return F.relu(x + self.scale * branch)


class InceptionResNet(nn.Module):
    """A small Inception-ResNet: stem, three stages of scaled-residual Inception blocks with strided reductions."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, widths: tuple[int, ...] = (32, 64, 128),
                 blocks: int = 2) -> None:
        super().__init__()
        self.stem = _cbr(in_channels, widths[0], 3)
        stages: list[nn.Module] = []
        c = widths[0]
        for i, w in enumerate(widths):
            layers: list[nn.Module] = []
            if i > 0:
                layers.append(_cbr(c, w, 3, stride=2))
                c = w
            layers += [InceptionResBlock(c) for _ in range(blocks)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stages(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))
