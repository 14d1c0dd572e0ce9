"""DenseNet-BC (Huang et al. 2017) for 28-32 px inputs.

Each dense layer computes new features ``f(z)`` from the concatenation of all earlier ones and appends them:
``z_{i+1} = cat(z_i, f_{i+1}(z_i))``. The Skip Gradient Method decays the gradient that flows back into ``f``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class DenseLayer(nn.Module):
    """Bottleneck dense layer: BN-ReLU-1x1 conv (4k) then BN-ReLU-3x3 conv (k); output is ``cat(x, new)``."""

    def __init__(self, c_in: int, growth: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(c_in)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(c_in, 4 * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(4 * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.conv1(self.relu1(self.norm1(x)))
        new = self.conv2(self.relu2(self.norm2(new)))
        return torch.cat([x, new], 1)


class Transition(nn.Module):
    """BN-ReLU-1x1 conv with compression, then 2x2 average pooling."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(c_in)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(self.relu(self.norm(x))), 2)


class DenseNetBC(nn.Module):
    """DenseNet-BC with three dense blocks, growth rate ``growth`` and compression 0.5.

    Modules are named as in torchvision (``features.denseblock1.denselayer1.relu1``, ``features.transition1``)
    so the SGM authors' name-based hooks (``variant="original"``) apply.
    """

    def __init__(self, in_channels: int, num_classes: int, depth: int = 40, growth: int = 12) -> None:
        super().__init__()
        n = (depth - 4) // 6
        c = 2 * growth
        self.conv1 = nn.Conv2d(in_channels, c, 3, padding=1, bias=False)
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        for i in range(3):
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            for j in range(n):
                layers[f"denselayer{j + 1}"] = DenseLayer(c, growth)
                c += growth
            blocks[f"denseblock{i + 1}"] = nn.Sequential(layers)
            if i < 2:
                blocks[f"transition{i + 1}"] = Transition(c, c // 2)
                c //= 2
        self.features = nn.Sequential(blocks)
        self.norm_final = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm_final(self.features(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def densenet_bc40(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """DenseNet-BC-40 with growth rate 12 (6 bottleneck dense layers per block)."""
    return DenseNetBC(in_channels, num_classes, depth=40, growth=12)
