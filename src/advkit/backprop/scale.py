"""Gradient scaling as an autograd function, installed by forward hooks.

The Skip Gradient Method (Wu et al., ICLR 2020) multiplies the gradient flowing back through a residual branch by
``gamma``. A forward hook on the module that produces the branch replaces its output ``y`` by ``scale_grad(y)``:
the same values in the forward pass, ``gamma * grad`` in the backward pass. This avoids module backward hooks,
which break on in-place ReLU (pytorch#61519).

The function returns a *new* tensor: returning a view (``y.view_as(y)``) makes the in-place shortcut addition of
torchvision blocks (``out += identity``) fail with "Output 0 of ... is a view and is being modified inplace".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from advkit.backprop.connection import Connection


class ScaleGrad(torch.autograd.Function):
    """Identity in the forward pass (a copy), ``grad * scale`` in the backward pass."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float, counters: Sequence[Connection]) -> torch.Tensor:
        ctx.scale = scale
        ctx.counters = counters
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        for c in ctx.counters:
            c.fired += 1
        return grad * ctx.scale, None, None


def scale_grad(x: torch.Tensor, scale: float, counters: Sequence[Connection] = ()) -> torch.Tensor:
    """``x`` unchanged in value, with its gradient multiplied by ``scale`` (and ``fired`` counted on ``counters``).

    Args:
        x: any tensor, shape kept.
        scale: the factor (``gamma``).
        counters: connections whose ``fired`` counter goes up by one each time the backward pass runs.
    """
    return ScaleGrad.apply(x, scale, counters)  # type: ignore[no-any-return]


def is_scale_node(fn: object) -> bool:
    """Whether an autograd node is the backward of :class:`ScaleGrad` (so hooks can look past it)."""
    return isinstance(fn, ScaleGrad._backward_cls)  # type: ignore[attr-defined]


def scaling_hook(scale: float, counters: Sequence[Connection]) -> Callable[[nn.Module, Any, Any], Any]:
    """A forward hook that wraps a module's tensor output in :func:`scale_grad`.

    Outputs that are not tensors, and calls made without gradient tracking, are left alone (no copy is made).
    """

    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, torch.Tensor) and output.requires_grad and torch.is_grad_enabled():
            return scale_grad(output, scale, counters)
        return None

    return hook
