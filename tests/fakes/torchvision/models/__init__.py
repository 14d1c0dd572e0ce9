"""Stand-in for ``torchvision.models``: the multi-weight API on three tiny networks.

Mirrors what the adapter relies on: ``list_models(module=...)``, ``get_model(name, weights=...)``,
``get_model_weights(name)`` returning a weights enum with a ``DEFAULT`` alias, whose members have ``url``,
``meta["categories"]`` and ``transforms()`` (an object with ``crop_size`` / ``resize_size`` as one-element lists,
``mean``, ``std`` and ``interpolation``). Pretrained builders set ``transform_input=True`` on the Inception-like
net, as torchvision does. Downloads fail with ``URLError`` unless ``ONLINE`` is true; "pretrained" weights are
then drawn from a fixed seed.
"""

from __future__ import annotations

import enum
import sys
import urllib.error
from collections import namedtuple
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

ONLINE = False
DOWNLOADS: list[str] = []
CATEGORIES = [f"category_{i}" for i in range(1000)]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


class ImageClassification(nn.Module):
    """The preset: resize to ``resize_size``, centre-crop ``crop_size``, normalise (only metadata is used here)."""

    def __init__(self, *, crop_size: int, resize_size: int = 256, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD,
                 interpolation: InterpolationMode = InterpolationMode.BILINEAR) -> None:
        super().__init__()
        self.crop_size = [crop_size]
        self.resize_size = [resize_size]
        self.mean = list(mean)
        self.std = list(std)
        self.interpolation = interpolation


@dataclass(eq=False)
class Weights:
    url: str
    transforms: Callable[..., Any]
    meta: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


class WeightsEnum(enum.Enum):
    @property
    def url(self) -> str:
        return self.value.url

    @property
    def meta(self) -> dict[str, Any]:
        return self.value.meta

    def transforms(self) -> Any:
        return self.value.transforms()

    def get_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """"Download": offline raises like ``torch.hub``; online returns weights drawn from the entry's seed."""
        DOWNLOADS.append(self.url)
        if not ONLINE:
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        g = torch.Generator().manual_seed(self.value.seed)
        return {k: torch.randn(v.shape, generator=g) * 0.1 if v.is_floating_point() else v.clone()
                for k, v in model.state_dict().items()}


class TinyResNet(nn.Module):
    """A one-block residual net: stem, a residual branch, pooling, a linear head."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=4, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.relu(self.bn1(self.conv1(x)))
        z = z + self.branch(z)
        return self.fc(z.mean(dim=(2, 3)))


InceptionOutputs = namedtuple("InceptionOutputs", ["logits", "aux_logits"])


class TinyInception(nn.Module):
    """Inception-v3-like: ``transform_input`` re-normalises ImageNet-normalised inputs to ``(x - 0.5) / 0.5``."""

    def __init__(self, num_classes: int = 1000, aux_logits: bool = True, transform_input: bool = False) -> None:
        super().__init__()
        self.transform_input = transform_input
        self.aux_logits = aux_logits
        self.conv = nn.Conv2d(3, 6, 5, stride=8)
        self.fc = nn.Linear(6, num_classes)
        self.AuxLogits = nn.Linear(6, num_classes) if aux_logits else None

    def _transform_input(self, x: torch.Tensor) -> torch.Tensor:
        if not self.transform_input:
            return x
        chans = [x[:, c:c + 1] * (IMAGENET_STD[c] / 0.5) + (IMAGENET_MEAN[c] - 0.5) / 0.5 for c in range(3)]
        return torch.cat(chans, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | InceptionOutputs:
        feats = torch.tanh(self.conv(self._transform_input(x))).mean(dim=(2, 3))
        logits = self.fc(feats)
        if self.training and self.AuxLogits is not None:
            return InceptionOutputs(logits, self.AuxLogits(feats))
        return logits


class ConvHeadNet(nn.Module):
    """No linear layer and no ``num_classes`` attribute: the class count shows only in the output."""

    def __init__(self, num_classes: int = 7) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, num_classes, 4, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x).mean(dim=(2, 3))


class ResNet50_Weights(WeightsEnum):  # noqa: N801 - torchvision's naming
    IMAGENET1K_V1 = Weights("https://download.example/models/resnet50-0676ba61.pth",
                            partial(ImageClassification, crop_size=224),
                            {"categories": CATEGORIES}, seed=1)
    IMAGENET1K_V2 = Weights("https://download.example/models/resnet50-11ad3fa6.pth",
                            partial(ImageClassification, crop_size=224, resize_size=232),
                            {"categories": CATEGORIES}, seed=2)
    DEFAULT = IMAGENET1K_V2


class Inception_V3_Weights(WeightsEnum):  # noqa: N801 - torchvision's naming
    IMAGENET1K_V1 = Weights("https://download.example/models/inception_v3_google-0cc3c7bd.pth",
                            partial(ImageClassification, crop_size=299, resize_size=342),
                            {"categories": CATEGORIES}, seed=3)
    DEFAULT = IMAGENET1K_V1


def _resolve(enum_cls: type[WeightsEnum], weights: Any) -> WeightsEnum | None:
    if weights is None or isinstance(weights, enum_cls):
        return weights
    return enum_cls[str(weights).rsplit(".", 1)[-1]]


def resnet50(*, weights: Any = None, progress: bool = True, **kwargs: Any) -> TinyResNet:
    w = _resolve(ResNet50_Weights, weights)
    if w is not None:
        kwargs["num_classes"] = len(w.meta["categories"])
    model = TinyResNet(**kwargs)
    if w is not None:
        model.load_state_dict(w.get_state_dict(model))
    return model


def inception_v3(*, weights: Any = None, progress: bool = True, **kwargs: Any) -> TinyInception:
    w = _resolve(Inception_V3_Weights, weights)
    if w is not None:
        kwargs.setdefault("transform_input", True)
        kwargs["aux_logits"] = True
        kwargs["num_classes"] = len(w.meta["categories"])
    model = TinyInception(**kwargs)
    if w is not None:
        model.load_state_dict(w.get_state_dict(model))
    return model


def convhead_net(*, weights: Any = None, progress: bool = True, **kwargs: Any) -> ConvHeadNet:
    if weights is not None:
        raise ValueError("convhead_net has no weights")
    return ConvHeadNet(**kwargs)


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "resnet50": resnet50, "inception_v3": inception_v3, "convhead_net": convhead_net,
}
_WEIGHTS: dict[str, type[WeightsEnum]] = {"resnet50": ResNet50_Weights, "inception_v3": Inception_V3_Weights}


def list_models(module: Any = None) -> list[str]:
    if module is not None and module is not sys.modules[__name__]:
        return []
    return sorted(_BUILDERS)


def get_model_weights(name: str) -> type[WeightsEnum]:
    if name not in _WEIGHTS:
        raise ValueError(f"The weight enum for the model {name!r} couldn't be retrieved.")
    return _WEIGHTS[name]


def get_model(name: str, **config: Any) -> nn.Module:
    if name not in _BUILDERS:
        raise ValueError(f"Unknown model {name}")
    return _BUILDERS[name](**config)
