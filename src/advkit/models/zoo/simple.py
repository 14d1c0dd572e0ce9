"""Shallow and classic architectures: the FGSM paper's linear softmax and maxout network, an MLP, the JSMA
paper's LeNet and a VGG with batch normalisation.

Every builder takes ``(in_channels, num_classes, image_size)`` and returns an ``nn.Module`` mapping normalised
``(N, C, H, W)`` inputs to logits ``(N, num_classes)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class LinearSoftmax(nn.Module):
    """Goodfellow et al. 2015's shallow softmax classifier: one affine map from pixels to logits."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_channels * image_size * image_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(x))


class MaxoutLinear(nn.Module):
    """A maxout layer (Goodfellow et al. 2013): ``max_k (W_k x + b_k)`` over ``pieces`` affine maps."""

    def __init__(self, in_features: int, out_features: int, pieces: int) -> None:
        super().__init__()
        self.out_features = out_features
        self.pieces = pieces
        self.fc = nn.Linear(in_features, out_features * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x).view(x.shape[0], self.out_features, self.pieces)
        return y.amax(dim=2)


class MaxoutNet(nn.Module):
    """The FGSM paper's MNIST maxout network: two maxout layers (240 units x 5 pieces), dropout, softmax."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, units: int = 240,
                 pieces: int = 5, dropout: float = 0.2) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.drop_in = nn.Dropout(dropout)
        self.layer1 = MaxoutLinear(in_channels * image_size * image_size, units, pieces)
        self.drop1 = nn.Dropout(0.5)
        self.layer2 = MaxoutLinear(units, units, pieces)
        self.drop2 = nn.Dropout(0.5)
        self.fc = nn.Linear(units, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop_in(self.flatten(x))
        x = self.drop1(self.layer1(x))
        x = self.drop2(self.layer2(x))
        return self.fc(x)


class MLP(nn.Module):
    """A multilayer perceptron: two hidden ReLU layers of 512 units with dropout."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, hidden: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * image_size * image_size, hidden), nn.ReLU(inplace=True), nn.Dropout(0.2),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(0.2),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LeNet(nn.Module):
    """The MNIST network of Papernot et al. 2016 (JSMA), Table 1: conv 32, conv 32, max-pool, conv 64, conv 64,
    max-pool, fully connected 200, 200, softmax (3x3 kernels, ReLU)."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 3), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        side = ((image_size - 4) // 2 - 4) // 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, 200), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(200, 200), nn.ReLU(inplace=True),
            nn.Linear(200, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LeNet5(nn.Module):
    """The MNIST LeNet-5 of AdverTorch (Ding et al. 2019; ``advertorch.test_utils.LeNet5``): conv 32 and conv 64
    (3x3, padding 1), each followed by ReLU and 2x2 max-pooling, then fully connected 200 and the classes. The
    attribute names are AdverTorch's, so its state dicts (its clean and PGD-trained MNIST checkpoints) load as they
    are through ``advkit models import``; it takes pixels in [0, 1] (mean 0, std 1 on its card)."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        side = image_size // 4
        self.linear1 = nn.Linear(64 * side * side, 200)
        self.linear2 = nn.Linear(200, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.max_pool2d(F.relu(self.conv1(x)), 2)
        out = F.max_pool2d(F.relu(self.conv2(out)), 2)
        return self.linear2(F.relu(self.linear1(out.flatten(1))))


class VGG(nn.Module):
    """VGG (Simonyan & Zisserman 2015) with batch normalisation, sized for 28-32 px inputs: the VGG-11 layout
    at half width (32-64-128-256 channels) with a global-average-pooled linear classifier."""

    cfg: tuple[int | str, ...] = (32, "M", 64, "M", 128, 128, "M", 256, 256, "M", 256, 256)

    def __init__(self, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in self.cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                width = int(v)
                layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                c = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
