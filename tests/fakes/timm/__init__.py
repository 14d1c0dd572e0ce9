"""A tiny stand-in for timm with the API surface advkit's adapter uses.

``create_model("name[.tag]", pretrained=..., pretrained_cfg_overlay={"file": path})`` returns a small net with
``num_classes`` and a ``pretrained_cfg`` dict (input_size, mean, std, interpolation, crop_pct, tag);
``timm.data.resolve_data_config({}, model=model)`` reads it. Pretrained weights come from a local safetensors
``file`` in the overlay, or from a simulated Hugging Face Hub that is offline unless ``ONLINE`` is true.
"""

from __future__ import annotations

from typing import Any

import torch
from safetensors.torch import load_file
from timm import data
from torch import nn

__version__ = "0.0+fake"
ONLINE = False

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class LocalEntryNotFoundError(FileNotFoundError, ValueError):
    """What huggingface_hub raises when a file is neither cached nor reachable."""


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Conv2d(in_chans, 8, 3, stride=4, padding=1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.stem(x)).mean(dim=(2, 3)))


_CFGS: dict[str, dict[str, dict[str, Any]]] = {
    "resnet50": {
        "a1_in1k": {"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 0.95,
                    "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "num_classes": 1000, "hf_hub_id": "timm/resnet50"},
        "tv_in1k": {"input_size": (3, 224, 224), "interpolation": "bilinear", "crop_pct": 0.875,
                    "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "num_classes": 1000, "hf_hub_id": "timm/resnet50"},
    },
    "inception_v3": {
        "tf_in1k": {"input_size": (3, 299, 299), "interpolation": "bicubic", "crop_pct": 0.875,
                    "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "num_classes": 1000,
                    "hf_hub_id": "timm/inception_v3"},
    },
    "vit_rect": {
        "in1k": {"input_size": (3, 160, 128), "interpolation": "bilinear", "crop_pct": 1.0,
                 "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "num_classes": 5, "hf_hub_id": "timm/vit_rect"},
    },
}


def list_models() -> list[str]:
    return sorted(f"{a}.{t}" for a, tags in _CFGS.items() for t in tags)


def create_model(model_name: str, pretrained: bool = False, pretrained_cfg_overlay: dict[str, Any] | None = None,
                 **kwargs: Any) -> nn.Module:
    arch, _, tag = model_name.partition(".")
    if arch not in _CFGS or (tag and tag not in _CFGS[arch]):
        raise RuntimeError(f"Unknown model ({model_name})")
    tag = tag or next(iter(_CFGS[arch]))
    cfg = {**_CFGS[arch][tag], "architecture": arch, "tag": tag, **(pretrained_cfg_overlay or {})}
    model = TinyNet(num_classes=kwargs.get("num_classes", cfg["num_classes"]), in_chans=cfg["input_size"][0])
    model.pretrained_cfg = cfg
    if pretrained:
        if cfg.get("file"):
            model.load_state_dict(load_file(cfg["file"]))
        elif not ONLINE:
            raise LocalEntryNotFoundError(
                "An error happened while trying to locate the file on the Hub and we cannot find the requested "
                "files in the local cache. Please check your connection and try again.")
        else:
            g = torch.Generator().manual_seed(len(model_name))
            model.load_state_dict({k: torch.randn(v.shape, generator=g) for k, v in model.state_dict().items()})
    return model


__all__ = ["create_model", "data", "list_models"]
