"""Residual networks for 28-32 px inputs (He et al. 2016, Zagoruyko & Komodakis 2016, Xie et al. 2017,
Hu et al. 2018).

Every block computes ``out = shortcut(x) + branch(x)`` followed by a ReLU (pre-activation blocks: without one),
the ``z_{i+1} = z_i + f_{i+1}(z_i)`` form that the Skip Gradient Method (Wu et al. 2020) decays. The shortcut is
the identity or a 1x1 projection when the shape changes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _projection(c_in: int, c_out: int, stride: int) -> nn.Module:
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm; ``relu(shortcut(x) + bn2(conv2(relu(bn1(conv1(x))))))``.

    Like torchvision's blocks, one ``nn.ReLU`` module named ``relu`` is used twice (after ``bn1`` and after the
    addition), so the SGM authors' name-based hooks (``variant="original"``) apply to the zoo as they do to
    torchvision ResNets.
    """

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1, **_: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _projection(c_in, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(self.shortcut(x) + out)


class SEModule(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): channel gates from globally pooled features."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class SEBasicBlock(BasicBlock):
    """A basic block whose residual branch is recalibrated by squeeze-and-excitation before the addition."""

    def __init__(self, c_in: int, planes: int, stride: int = 1, **kw: int) -> None:
        super().__init__(c_in, planes, stride)
        self.se = SEModule(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.relu(self.shortcut(x) + out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand; ``relu(shortcut(x) + branch(x))``, with one shared
    ``relu`` module used three times as in torchvision."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1, groups: int = 1, group_width: int = 0) -> None:
        super().__init__()
        # ResNeXt: ``groups`` paths of ``group_width`` channels at the first stage's 16 planes, scaled with planes.
        mid = groups * group_width * planes // 16 if group_width else planes
        out_c = planes * self.expansion
        self.conv1 = nn.Conv2d(c_in, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_c)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _projection(c_in, out_c, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(self.shortcut(x) + out)


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016b): ``x + conv(relu(bn(conv(relu(bn(x))))))``, no ReLU after."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1, dropout: float = 0.0, **_: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.shortcut = (nn.Identity() if stride == 1 and c_in == planes
                         else nn.Conv2d(c_in, planes, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if not isinstance(self.shortcut, nn.Identity) else x
        out = self.conv1(out)
        out = self.conv2(self.drop(F.relu(self.bn2(out))))
        return shortcut + out


class ResNet(nn.Module):
    """A three-stage CIFAR-style residual network (stem 3x3 conv, stages at strides 1, 2, 2, global pool)."""

    def __init__(self, block: Callable[..., nn.Module], depths: tuple[int, int, int], widths: tuple[int, int, int],
                 in_channels: int, num_classes: int, stem: int = 16, preact: bool = False,
                 **block_kw: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)
        self.bn1: nn.Module = nn.Identity() if preact else nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.preact = preact
        c = stem
        stages = []
        for i, (n, w) in enumerate(zip(depths, widths, strict=True)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                b = block(c, w, stride, **block_kw)
                blocks.append(b)
                c = w * getattr(b, "expansion", 1)
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn_final: nn.Module = nn.BatchNorm2d(c) if preact else nn.Identity()
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        if not self.preact:
            out = self.relu(self.bn1(out))
        out = self.layer3(self.layer2(self.layer1(out)))
        if self.preact:
            out = F.relu(self.bn_final(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def resnet(depth: int) -> Callable[[int, int, int], nn.Module]:
    """ResNet-``depth`` of He et al. 2016 for CIFAR (``depth = 6n + 2`` basic blocks, widths 16-32-64)."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6

    def build(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        return ResNet(BasicBlock, (n, n, n), (16, 32, 64), in_channels, num_classes)

    return build


def resnet29_bottleneck(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """A bottleneck ResNet-29 (3 stages x 3 bottleneck blocks, planes 16-32-64, expansion 4)."""
    return ResNet(Bottleneck, (3, 3, 3), (16, 32, 64), in_channels, num_classes)


def preact_resnet20(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Pre-activation ResNet-20 (He et al. 2016b)."""
    return ResNet(PreActBlock, (3, 3, 3), (16, 32, 64), in_channels, num_classes, preact=True)


def wrn16_2(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Wide ResNet WRN-16-2 (Zagoruyko & Komodakis 2016): pre-activation blocks, widths 32-64-128."""
    return ResNet(PreActBlock, (2, 2, 2), (32, 64, 128), in_channels, num_classes, preact=True)


def resnext29_4x8d(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """ResNeXt-29 (Xie et al. 2017), cardinality 4 with 8 channels per group at the first stage (grouped 3x3)."""
    return ResNet(Bottleneck, (3, 3, 3), (16, 32, 64), in_channels, num_classes, groups=4, group_width=8)


def se_resnet20(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """SE-ResNet-20 (Hu et al. 2018): ResNet-20 with squeeze-and-excitation on every residual branch."""
    return ResNet(SEBasicBlock, (3, 3, 3), (16, 32, 64), in_channels, num_classes)
