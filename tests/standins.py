"""Tiny pure-torch stand-ins for torchvision's and timm's ResNets and DenseNets, and hand-written references.

torchvision and timm are not importable here; these copy the *structure* that matters to the Skip Gradient
Method (module names, a shared in-place ``self.relu``, ``out += identity``, ``downsample`` Sequentials, dense
layers that return only their new features, timm's ``act1``/``act2``/``drop_path``/``se``) at a few channels.

Every block that has a residual branch or new dense features looks at ``self.ref_gamma``: when set (see
:func:`set_ref_gamma`), it wraps the branch output in :class:`RefScale`, a gradient-scaling function written here
independently of advkit, so tests can compare ``skip_gradient`` with a model that decays its branches by hand.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RefScale(torch.autograd.Function):
    """Reference: forward returns ``x + 0`` (a new tensor), backward multiplies the gradient by ``s``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, s: float) -> Tensor:
        ctx.s = s
        return x + 0

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:
        return g * ctx.s, None


def _ref(module: nn.Module, branch: Tensor) -> Tensor:
    gamma = getattr(module, "ref_gamma", None)
    return branch if gamma is None else RefScale.apply(branch, gamma)


def set_ref_gamma(model: nn.Module, gamma: float | None) -> nn.Module:
    """Turn the hand-written branch decay on (``gamma``) or off (``None``) in every block; returns ``model``."""
    for m in model.modules():
        if hasattr(m, "ref_gamma"):
            m.ref_gamma = gamma
    return model


def init_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics and affine parameters (so branches are not near-zero) and eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


# ---------------------------------------------------------------- torchvision-structured ResNet


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock structure: one in-place ``self.relu`` used twice, ``out += identity``."""

    expansion = 1
    ref_gamma: float | None = None

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = _ref(self, self.bn2(self.conv2(out)))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class Bottleneck(nn.Module):
    """torchvision's Bottleneck structure: one in-place ``self.relu`` used three times, ``out += identity``."""

    expansion = 4
    ref_gamma: float | None = None

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = _ref(self, self.bn3(self.conv3(out)))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class ResNet(nn.Module):
    """torchvision's ResNet layout (``conv1 bn1 relu maxpool layer1..layer4 avgpool fc``) at tiny widths."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, int, int, int],
                 width: int = 4, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int,
                    stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride,
                                                 bias=False), nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def tv_resnet(kind: str = "basic", layers: tuple[int, int, int, int] = (2, 2, 2, 2), **kw: Any) -> ResNet:
    """A torchvision-structured ResNet; ``tv_resnet("bottleneck", (1, 1, 12, 1))`` has a ``layer3.10``."""
    return init_bn(ResNet(BasicBlock if kind == "basic" else Bottleneck, layers, **kw))  # type: ignore[return-value]


# ---------------------------------------------------------------- torchvision-structured DenseNet


class _DenseLayer(nn.Module):
    """torchvision's dense layer: concatenates its inputs, returns only the new features."""

    ref_gamma: float | None = None

    def __init__(self, num_input_features: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)

    def forward(self, input: Tensor | list[Tensor]) -> Tensor:  # noqa: A002 - torchvision's name
        prev_features = [input] if isinstance(input, Tensor) else input
        concated = torch.cat(prev_features, 1)
        bottleneck = self.conv1(self.relu1(self.norm1(concated)))
        return _ref(self, self.conv2(self.relu2(self.norm2(bottleneck))))


class _DenseBlock(nn.ModuleDict):
    """torchvision's dense block: the concatenation happens here, in the forward loop."""

    def __init__(self, num_layers: int, num_input_features: int, bn_size: int, growth_rate: int) -> None:
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", _DenseLayer(num_input_features + i * growth_rate, growth_rate,
                                                              bn_size))

    def forward(self, init_features: Tensor) -> Tensor:
        features = [init_features]
        for _, layer in self.items():
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    def __init__(self, num_input_features: int, num_output_features: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(num_input_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(num_input_features, num_output_features, 1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNet(nn.Module):
    """torchvision's DenseNet layout (``features.conv0 ... denseblockN.denselayerM ... transitionN ... norm5``)."""

    def __init__(self, growth_rate: int = 4, block_config: tuple[int, ...] = (3, 2), num_init_features: int = 8,
                 bn_size: int = 2, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(in_channels, num_init_features, 3, padding=1, bias=False)),
            ("norm0", nn.BatchNorm2d(num_init_features)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
        ]))
        c = num_init_features
        for i, n in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}", _DenseBlock(n, c, bn_size, growth_rate))
            c += n * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", _Transition(c, c // 2))
                c //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(c))
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.features(x), inplace=True)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1))


def tv_densenet(**kw: Any) -> DenseNet:
    """A torchvision-structured DenseNet (default: 3 + 2 dense layers)."""
    return init_bn(DenseNet(**kw))  # type: ignore[return-value]


# ---------------------------------------------------------------- timm-structured ResNet


class DropPath(nn.Module):
    """timm's stochastic depth: identity in eval mode, a per-sample Bernoulli mask in training."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class SEModule(nn.Module):
    """timm's squeeze-and-excitation: ``x * gate(fc2(act(bn(fc1(mean(x))))))``."""

    def __init__(self, channels: int, rd_channels: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, rd_channels, 1)
        self.bn = nn.Identity()
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        x_se = x.mean((2, 3), keepdim=True)
        x_se = self.fc2(self.act(self.bn(self.fc1(x_se))))
        return x * self.gate(x_se)


class TimmBasicBlock(nn.Module):
    """timm's ResNet BasicBlock structure: ``act1``/``act2``, optional ``se`` and ``drop_path``, ``x += shortcut``."""

    expansion = 1
    ref_gamma: float | None = None

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 se: bool = False, drop_path: float = 0.0) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.drop_block = nn.Identity()
        self.act1 = nn.ReLU(inplace=True)
        self.aa = nn.Identity()
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = SEModule(planes) if se else None
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))
        x = self.bn2(self.conv2(x))
        if self.se is not None:
            x = self.se(x)
        if self.drop_path is not None:
            x = self.drop_path(x)
        x = _ref(self, x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        x += shortcut
        return self.act2(x)


class TimmResNet(nn.Module):
    """timm's ResNet layout (``conv1 bn1 act1 maxpool layer1..layer4 global_pool fc``), basic blocks."""

    def __init__(self, layers: tuple[int, int, int, int] = (2, 2, 2, 2), width: int = 4, in_channels: int = 3,
                 num_classes: int = 10, se: bool = False, drop_path: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        c = width
        for i, n in enumerate(layers):
            planes, stride = width * 2 ** i, 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                down = None
                if j == 0 and (stride != 1 or c != planes):
                    down = nn.Sequential(nn.Conv2d(c, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))
                blocks.append(TimmBasicBlock(c, planes, stride if j == 0 else 1, down, se=se, drop_path=drop_path))
                c = planes
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.global_pool(x).flatten(1))


def timm_resnet(**kw: Any) -> TimmResNet:
    """A timm-structured ResNet (``se=True`` for SE blocks, ``drop_path=p`` for stochastic depth)."""
    return init_bn(TimmResNet(**kw))  # type: ignore[return-value]


# ---------------------------------------------------------------- hand-written blocks: pre-activation, scaled


class PreActBlock(nn.Module):
    """Pre-activation block: ``conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut``, projection on ``relu(bn1(x))``."""

    ref_gamma: float | None = None

    def __init__(self, c_in: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = _conv3x3(c_in, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.shortcut = (nn.Conv2d(c_in, planes, 1, stride=stride, bias=False)
                         if stride != 1 or c_in != planes else None)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return _ref(self, out) + shortcut


class ScaledResidual(nn.Module):
    """Inception-ResNet-style block: ``relu(x + scale * up(cat(b1(x), b3(x))))``."""

    ref_gamma: float | None = None

    def __init__(self, c: int, scale: float = 0.2) -> None:
        super().__init__()
        h = c // 2
        self.b1 = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU(inplace=True))
        self.b3 = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU(inplace=True),
                                _conv3x3(h, h), nn.BatchNorm2d(h), nn.ReLU(inplace=True))
        self.up = nn.Conv2d(2 * h, c, 1)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        branch = self.up(torch.cat([self.b1(x), self.b3(x)], 1))
        return F.relu(x + _ref(self, self.scale * branch))


class Chain(nn.Module):
    """``stem -> body -> pool -> fc`` around any blocks; ``dynamic=True`` adds data-dependent control flow."""

    def __init__(self, body: list[nn.Module], c_stem: int, c_out: int, in_channels: int = 3,
                 dynamic: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, c_stem, 3, padding=1)
        self.body = nn.Sequential(*body)
        self.fc = nn.Linear(c_out, 10)
        self.dynamic = dynamic

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        if self.dynamic and x.abs().sum() > 1e12:  # data-dependent: fx cannot trace the root
            x = x * 0
        x = self.body(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def preact_net() -> Chain:
    """Three pre-activation blocks (identity, projection with stride, identity)."""
    return init_bn(Chain([PreActBlock(4, 4), PreActBlock(4, 8, 2), PreActBlock(8, 8)], 4, 8))  # type: ignore


def scaled_net() -> Chain:
    """Two Inception-ResNet-style scaled-residual blocks."""
    return init_bn(Chain([ScaledResidual(8), ScaledResidual(8)], 8, 8))  # type: ignore[return-value]


# ---------------------------------------------------------------- models fx cannot trace


class DynamicBasicBlock(BasicBlock):
    """A BasicBlock whose own forward has data-dependent control flow (found by the block-type rule)."""

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        if out.sum() < -1e12:
            out = out * 0
        out = _ref(self, self.bn2(self.conv2(out)))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Gate(nn.Module):
    """A module fx cannot trace (data-dependent branch); it becomes an fx leaf."""

    def forward(self, x: Tensor) -> Tensor:
        return x * 0.5 if x.max() > 1e12 else x * 1.0


class GatedBlock(nn.Module):
    """``relu(x + gate(conv2(relu(bn1(conv1(x))))))``: traceable, except for its ``gate``."""

    ref_gamma: float | None = None

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(c, c)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = _conv3x3(c, c)
        self.gate = Gate()

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + _ref(self, self.gate(self.conv2(F.relu(self.bn1(self.conv1(x)))))))


def untraceable_net() -> Chain:
    """Root not traceable; body: a rule-only block, a block with an untraceable gate, a plain block."""
    return init_bn(Chain([DynamicBasicBlock(4, 4), GatedBlock(4), BasicBlock(4, 4)], 4, 4,  # type: ignore
                         dynamic=True))
