"""Gradient scaling installed by forward hooks.

The Skip Gradient Method (Wu et al., ICLR 2020) multiplies the gradient flowing back through a residual branch by
``gamma``. A forward hook on the module that produces the branch registers a *tensor* hook on its output ``y``:
the forward pass is untouched (no copy, no extra autograd node) and the backward pass receives ``gamma * grad``
for ``y``. This avoids module backward hooks, which break on in-place ReLU (pytorch#61519), and works with the
in-place shortcut addition of torchvision blocks (``out += identity``): a hook registered before an in-place
modification receives the gradient with respect to the value before it (PyTorch's documented semantics), which
is exactly the branch's gradient.

:class:`ScaleGrad` is the same scaling as an autograd function, for code that wants it inside an expression.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeGuard

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
    out: torch.Tensor = ScaleGrad.apply(x, scale, counters)
    return out


def is_scale_node(fn: object) -> TypeGuard[torch.autograd.graph.Node]:
    """Whether an autograd node is the backward of :class:`ScaleGrad` (so hooks can look past it)."""
    return isinstance(fn, ScaleGrad._backward_cls)


def scaling_hook(scale: float, counters: Sequence[Connection]) -> Callable[[nn.Module, Any, Any], Any]:
    """A forward hook that makes the gradient of a module's tensor output ``scale`` times larger.

    The output itself is returned unchanged (same tensor) unless the module returned one of its inputs, in which
    case a scaled copy replaces it; outputs that are not tensors, and calls made without
    gradient tracking, are left alone. Each backward pass through the output adds one to ``fired`` on
    ``counters``.
    """

    def on_grad(grad: torch.Tensor) -> torch.Tensor:
        for c in counters:
            c.fired += 1
        return grad * scale

    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        if not (isinstance(output, torch.Tensor) and output.requires_grad and torch.is_grad_enabled()):
            return None
        if any(a is output for a in args):
            # the module passed its input through (an identity, a drop-path in eval): a hook on that tensor would
            # scale every path through it, so scale a copy instead
            return scale_grad(output, scale, counters)
        output.register_hook(on_grad)
        return None

    return hook
