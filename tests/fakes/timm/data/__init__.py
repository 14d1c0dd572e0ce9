"""Stand-in for ``timm.data``: ``resolve_data_config`` over a model's ``pretrained_cfg``."""

from __future__ import annotations

from typing import Any

from torch import nn


def resolve_data_config(args: dict[str, Any] | None = None, pretrained_cfg: dict[str, Any] | None = None,
                        model: nn.Module | None = None, verbose: bool = False) -> dict[str, Any]:
    args = args or {}
    cfg = dict(pretrained_cfg or getattr(model, "pretrained_cfg", {}) or {})
    out = {
        "input_size": tuple(cfg.get("input_size", (3, 224, 224))),
        "interpolation": cfg.get("interpolation", "bicubic"),
        "mean": tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        "std": tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        "crop_pct": cfg.get("crop_pct", 0.875),
        "crop_mode": cfg.get("crop_mode", "center"),
    }
    out.update({k: v for k, v in args.items() if k in out and v is not None})
    return out
