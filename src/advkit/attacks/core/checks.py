"""The input checks every attack runs before it spends a pass: ``ValueError`` naming the problem and the fix.

Images, labels and targets (:func:`validate_inputs`), the model against the images (:func:`check_model_inputs`),
a query attack's starting point (:func:`check_start`), labels against the model's classes (:func:`check_labels`)
and the numeric settings of attacks and parts (:func:`check_number`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["check_choice", "check_labels", "check_model_inputs", "check_number", "check_start", "validate_inputs"]


def validate_inputs(x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> None:
    """Check an attack's inputs; ``ValueError`` naming the first problem found and the fix."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch tensor of pixels in [0, 1], got {type(x).__name__}; convert an array "
                         f"with torch.from_numpy(a).float() (and / 255 for 8-bit pixels)")
    if not x.is_floating_point():
        fix = "x.float() / 255" if x.dtype == torch.uint8 else "x.float() (scaled into [0, 1])"
        raise ValueError(f"x is a {x.dtype} tensor; attacks take float pixels in [0, 1]"
                         f"{' (8-bit pixels 0-255 are divided by 255)' if x.dtype == torch.uint8 else ''}: "
                         f"pass {fix}")
    for what, t in (("x", x), ("y", y), ("target", target)):
        if isinstance(t, torch.Tensor) and t.is_meta:
            raise ValueError(f"{what} is a meta tensor (a shape without data, as made under "
                             f"torch.device('meta')); create it with its values on 'cpu' or 'cuda'")
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"x is an empty batch (shape {tuple(x.shape)}): there is nothing to attack; pass at "
                         f"least one image (check the selection that produced x)")
    if x[0].numel() == 0:
        raise ValueError(f"x has no pixels (shape {tuple(x.shape)}); images are (N, C, H, W) with C, H, W >= 1")
    if torch.isnan(x).any():
        raise ValueError(f"x contains {int(torch.isnan(x).sum())} NaN value(s)")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"x must hold pixels in [0, 1] (the model normalises internally); got values in [{lo:.4g}, {hi:.4g}]. "
            f"Pass unnormalised images, or wrap your network with advkit.models.Classifier(net, mean, std, ...)."
        )
    if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"y must be an integer tensor of labels, got "
                         f"{y.dtype if isinstance(y, torch.Tensor) else type(y).__name__}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},) to match x's batch, got {tuple(y.shape)}")
    if y.numel() and int(y.min()) < 0:
        raise ValueError(f"labels must be >= 0, got {int(y.min())}")
    if target is not None:
        if not isinstance(target, torch.Tensor) or target.shape != y.shape or target.dtype != y.dtype:
            raise ValueError(f"target must be a tensor like y (shape {tuple(y.shape)}, {y.dtype}), got "
                             f"{tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__}")
        if target.numel() and int(target.min()) < 0:
            raise ValueError(f"target classes must be >= 0, got {int(target.min())}")
        same = (target == y).nonzero().flatten()
        if same.numel():
            raise ValueError(f"target equals the true label for {same.numel()} sample(s) (first at index "
                             f"{int(same[0])}); a targeted attack needs target != y")


def check_model_inputs(module: nn.Module | None, x: torch.Tensor) -> None:
    """``ValueError`` if ``module`` cannot take the pixels ``x``: its weights are meta tensors (shapes without
    values), or it computes in another floating dtype than ``x`` (float64 images on a float32 model). A callable
    without parameters or buffers is not checked.

    The dtype is not converted silently: the result would come back in a dtype the caller did not pass. float64
    images work on a float64 model (``model.double()``)."""
    if module is None:
        return
    tensors = [*module.parameters(), *module.buffers()]
    if any(t.is_meta for t in tensors):
        raise ValueError(f"the model ({type(module).__name__}) has meta tensors for weights (shapes without values, "
                         f"as built under torch.device('meta')); materialise and fill them first: "
                         f"model.to_empty(device='cpu') then model.load_state_dict(...), or advkit.models.load(...)")
    floating = [t for t in tensors if t.is_floating_point()]
    dtype = floating[0].dtype if floating else None
    if dtype is not None and x.dtype != dtype:
        fix = {torch.float32: "x.float()", torch.float64: "x.double()", torch.float16: "x.half()"}.get(
            dtype, f"x.to({dtype})")
        raise ValueError(f"x is {x.dtype} but the model computes in {dtype}: pass {fix} (or attack a model converted "
                         f"to {x.dtype}, e.g. model.to({x.dtype}))")


def check_start(start: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``ValueError`` unless ``start`` is a finite pixel batch shaped like ``x``; returns it on ``x``'s device."""
    if not isinstance(start, torch.Tensor) or not start.is_floating_point() or start.shape != x.shape:
        got = tuple(start.shape) if isinstance(start, torch.Tensor) else type(start).__name__
        raise ValueError(f"start must be a float tensor shaped like x {tuple(x.shape)}, got {got}")
    if not torch.isfinite(start).all() or float(start.min()) < 0.0 or float(start.max()) > 1.0:
        raise ValueError("start must hold finite pixels in [0, 1] (an adversarial example, e.g. "
                         "create('sgm+mi', eps=...)(surrogate, x, y).x_adv)")
    return start.to(device=x.device, dtype=x.dtype)


def check_labels(y: torch.Tensor, target: torch.Tensor | None, num_classes: int) -> None:
    """``ValueError`` if a label or target is not a class index of a ``num_classes``-way model."""
    if y.numel() and int(y.max()) >= num_classes:
        raise ValueError(f"labels must be < the model's {num_classes} classes, got label {int(y.max())}")
    if target is not None and target.numel() and int(target.max()) >= num_classes:
        raise ValueError(f"target class {int(target.max())} is out of range for a {num_classes}-class model")


def check_number(name: str, value: Any, *, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, hi_open: bool = False, integer: bool = False) -> None:
    """``ValueError`` unless ``value`` is a finite real (an integer if asked) within the bounds."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok and integer:
        ok = isinstance(value, numbers.Integral)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        lo_s = "" if lo is None else ("(" if lo_open else "[") + f"{lo:g}"
        hi_s = "" if hi is None else f"{hi:g}" + (")" if hi_open else "]")
        rng = f" in {lo_s or '(-inf'}, {hi_s or 'inf)'}" if lo is not None or hi is not None else ""
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {kind}{rng}, got {value!r}")


def check_choice(name: str, value: Any, choices: Iterable[str]) -> None:
    """``ValueError`` naming ``name`` and the allowed values unless ``value`` is one of ``choices``."""
    allowed = tuple(choices)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
