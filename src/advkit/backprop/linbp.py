"""Linear backpropagation (LinBP) as a scoped backward-pass modifier.

Guo, Li, Chen, "Backpropagating Linearly Improves Transferability of Adversarial Examples", NeurIPS 2020. The
forward pass is unchanged; in the backward pass, from a chosen residual block on, every ReLU *inside a residual
branch* passes the gradient unmasked (as if the network were linear there), and each of those blocks' residual-branch
gradients is re-normalised: ``J_lin^T g`` is rescaled, per sample, to the L2 norm of the true ``J^T g`` of the
branch, so the balance between the branch and the skip connection stays as it was (the authors' ``main_grad_norm``).
The ReLU after the addition of branch and shortcut keeps its mask, as in the authors' code (``block_func`` of their
release, followed by TransferAttack's ``linbp.py``: ``out = block.relu(identity_out + x_out)`` with the true ReLU).

Usage::

    with advkit.backprop.linear_backprop(model) as found:      # hooks removed on exit
        loss = loss_fn(model(x), y)
        (grad,) = torch.autograd.grad(loss, x)

Blocks are the residual connections :func:`find_connections` finds, in forward order; ReLUs are the ``nn.ReLU``
modules inside the chosen blocks (functional ``F.relu`` calls are not seen, and a choice that holds no ReLU module
is an error rather than a silent no-op). Blocks often call one ReLU module twice, inside the branch and after the
addition (torchvision's ``BasicBlock`` and ``Bottleneck``, the zoo's ``BasicBlock``): a call is linearised only while
the block's branch is running, i.e. after the block starts and before its branch output module (the last module of
the branch, e.g. ``bn2``) returns; a block whose branch output is not known is linearised wholly and
:class:`LinBPFound` says so (``unsplit``). Every hook is a forward hook; an in-place ReLU is fed a copy of its input.

Cost: the re-normalisation needs the true and the linear gradient through each linearised branch; the linear one is
the gradient the backward pass continues with (rescaled), so each branch is traversed twice in all, once more than
a plain backward pass (the authors' code does the same two passes). When a parameter of the branch needs a gradient
the branch is traversed a third time, to give parameters their (rescaled, linear) gradient. ``renorm=False`` costs
nothing extra.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from advkit.backprop.discover import find_connections

__all__ = ["LinBPFound", "linear_backprop"]

_STATE = threading.local()


def _linear() -> bool:
    return getattr(_STATE, "mode", "linear") == "linear"


class _LinearReLU(torch.autograd.Function):
    """``relu(u)`` forward; backward passes the gradient unmasked (masked while re-normalisation measures)."""

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(u > 0)
        return u.clamp_min(0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (mask,) = ctx.saved_tensors
        return grad if _linear() else grad * mask


class _Renorm(torch.autograd.Function):
    """The branch's output ``o`` forward; backward gives the branch input ``z`` the linear gradient ``J_lin^T g``
    rescaled to the L2 norm of the true ``J^T g`` per sample. With ``through`` (a branch parameter needs a gradient)
    it instead returns the rescaled ``g`` for ``o`` and the backward pass traverses the branch once more."""

    @staticmethod
    def forward(ctx: Any, o: torch.Tensor, z: torch.Tensor, o_graph: list[torch.Tensor], found: Any,
                through: bool) -> torch.Tensor:
        ctx.refs = (o_graph[0], z)  # in a list, so that autograd does not see the branch's graph as an input
        ctx.found = found
        ctx.through = through
        return o.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        o, z = ctx.refs
        del ctx.refs
        ctx.found.renorm_passes += 2
        with torch.enable_grad():
            try:
                _STATE.mode = "normal"
                (true,) = torch.autograd.grad(o, z, grad, retain_graph=True, allow_unused=True)
                _STATE.mode = "linear"
                (lin,) = torch.autograd.grad(o, z, grad, retain_graph=ctx.through, allow_unused=True)
            finally:
                _STATE.mode = "linear"
        if true is None or lin is None:
            return (grad, None, None, None, None) if ctx.through else (None, None, None, None, None)
        scale = (true.flatten(1).norm(dim=1) / lin.flatten(1).norm(dim=1).clamp_min(1e-30)).to(grad.dtype)
        if ctx.through:
            return grad * scale.view(-1, *([1] * (grad.ndim - 1))), None, None, None, None
        return None, lin * scale.view(-1, *([1] * (lin.ndim - 1))), None, None, None


@dataclass
class LinBPFound:
    """What :func:`linear_backprop` changed: the index of the first linearised block among the residual blocks,
    their names, how many ReLU modules were linearised, how many hooks ran (linearised ReLU calls), how many partial
    backward passes through a branch the re-normalisation spent (two per linearised branch per backward pass), how
    many ReLU calls after a block's addition were left masked (``kept``), and the blocks whose branch output module is
    unknown, so that every ReLU call in them was linearised (``unsplit``)."""

    start: int
    blocks: tuple[str, ...]
    relus: int
    fired: int = 0
    renorm_passes: int = 0
    kept: int = 0
    unsplit: tuple[str, ...] = ()


@contextmanager
def linear_backprop(model: nn.Module, start: int | str = "auto", renorm: bool = True) -> Iterator[LinBPFound]:
    """Make ``model``'s backward pass linear from residual block ``start`` on, inside a ``with`` block.

    Args:
        model: any model with residual blocks (found by structure) holding ``nn.ReLU`` modules.
        start: ``"auto"`` (the first block of the second half, ``len(blocks) // 2``, as the authors start at
            ResNet-50's ``layer3``) or the index of the first linearised block.
        renorm: re-normalise each linearised residual branch's gradient to its true norm (the paper's LinBP).

    Yields:
        A :class:`LinBPFound`.

    Raises:
        ValueError: no residual block, ``start`` out of range, or no ``nn.ReLU`` module in the chosen blocks.
    """
    try:
        found = find_connections(model)
    except ValueError:
        found = []
    residual = [c for c in found if c.kind == "residual" and c.block]
    blocks = list(dict.fromkeys(c.block for c in residual))
    if not blocks:
        raise ValueError(f"LinBP needs residual blocks; none found in this {type(model).__name__}")
    first = len(blocks) // 2 if start == "auto" else start
    if not isinstance(first, int) or isinstance(first, bool) or not 0 <= first < len(blocks):
        raise ValueError(f"linbp_start must be 'auto' or a block index in [0, {len(blocks) - 1}], got {start!r}")
    chosen = blocks[first:]
    relus: list[nn.Module] = []
    for b in chosen:
        for m in model.get_submodule(b).modules():
            if isinstance(m, nn.ReLU) and m not in relus:
                relus.append(m)
    if not relus:
        raise ValueError(f"LinBP found no nn.ReLU module in blocks {chosen[:3]}...; their activations are functional "
                         "calls it cannot see")
    branches = {c.block: c.branch for c in residual if c.block in chosen and c.branch}
    result = LinBPFound(start=first, blocks=tuple(chosen), relus=len(relus),
                        unsplit=tuple(b for b in chosen if b not in branches))
    owner: dict[nn.Module, str] = {m: b for b in chosen for m in model.get_submodule(b).modules()
                                   if isinstance(m, nn.ReLU)}
    handles: list[RemovableHandle] = []
    inputs: dict[nn.Module, list[torch.Tensor]] = defaultdict(list)
    phase: dict[str, str] = {}  # block -> "branch" while its branch runs, "after" once the branch output returned
    block_in: dict[str, torch.Tensor] = {}

    def relu_pre(module: nn.Module, args: tuple[Any, ...]) -> Any:
        u = args[0]
        inputs[module].append(u)
        return (u.clone(),) if getattr(module, "inplace", False) else None

    def relu_post(module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
        u = inputs[module].pop()
        if not torch.is_grad_enabled():
            return out
        if phase.get(owner[module]) == "after":
            result.kept += 1
            return out
        result.fired += 1
        return _LinearReLU.apply(u)

    def block_pre(name: str) -> Any:
        def hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
            block_in[name] = args[0]
            phase[name] = "branch"
        return hook

    def block_post(name: str) -> Any:
        def hook(_m: nn.Module, _args: tuple[Any, ...], _out: torch.Tensor) -> None:
            phase.pop(name, None)
            block_in.pop(name, None)
        return hook

    def branch_post(block: str, through: bool) -> Any:
        def hook(_m: nn.Module, _args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
            phase[block] = "after"
            z = block_in.get(block)
            if not renorm or z is None or not torch.is_grad_enabled() or not out.requires_grad:
                return out
            return _Renorm.apply(out if through else out.detach(), z, [out], result, through)
        return hook

    try:
        for m in relus:
            handles.append(m.register_forward_pre_hook(relu_pre))
            handles.append(m.register_forward_hook(relu_post))
        for b, branch in branches.items():
            block, out_module = model.get_submodule(b), model.get_submodule(branch)
            through = any(p.requires_grad for p in block.parameters())
            handles.append(block.register_forward_pre_hook(block_pre(b)))
            handles.append(block.register_forward_hook(block_post(b)))
            handles.append(out_module.register_forward_hook(branch_post(b, through)))
        yield result
    finally:
        for h in handles:
            h.remove()
        block_in.clear()
        phase.clear()
        inputs.clear()
