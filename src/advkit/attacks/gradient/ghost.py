"""Ghost networks as a scope part: a fresh random erosion of the source model at every forward pass.

Li, Bai, Zhou, Xie, Zhang, Yuille, "Learning Transferable Adversarial Examples via Ghost Networks", AAAI 2020.
Instead of training an ensemble, each gradient of the iterative attack is taken on a *ghost* of the source model:

* **skip-connection erosion** (residual models): every residual block ``z_{l+1} = z_l + f(z_l)`` becomes
  ``z_{l+1} = lambda_l * z_l + f(z_l)``, one scalar ``lambda_l ~ U[1 - r, 1 + r]`` per block and per forward
  pass (the paper's ``r = 0.22``); the forward pass itself changes, unlike SGM, which scales only gradients;
* **dropout erosion** (models without skip connections): inverted dropout of rate ``p`` on the output of every
  activation layer, a fresh mask per forward pass (``p = 0.006``: the authors' released keep probability 0.994).

Residual blocks are found by structure (:func:`advkit.backprop.find_connections`); each block is traced to find
its shortcut operand. A shortcut computed by a module inside the block (``nn.Identity``, a 1x1 projection) gets a
forward hook that multiplies its output by ``lambda_l``; a shortcut that is the block's input itself (torchvision's
``out += identity``) is eroded by adding ``(lambda_l - 1) * z_l`` to the branch output. Draws, in this order per
forward pass of the (member) model: one ``torch.rand(n_blocks, generator=ctx.generator)`` for the ``n_blocks``
residual blocks in forward order; for dropout, one ``torch.rand(shape, generator=...)`` per activation call.
Ensembles are eroded member by member.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from advkit.attacks.core.checks import check_choice
from advkit.attacks.gradient.parts import Context, Part, register_part
from advkit.attacks.gradient.scopes import _has_skips, per_member
from advkit.models.ensemble import Ensemble

EROSIONS = ("auto", "skip", "dropout")
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish, nn.Softplus)


@dataclass
class _Block:
    """One eroded residual block: where its shortcut is and how it is scaled."""

    block: str
    shortcut: str  # module inside the block producing the shortcut; "" when the shortcut is the block input
    branch: str
    factor: float = 1.0  # the addition sees ``factor * branch output`` (Inception-ResNet's scaled residuals)


def _shortcut_of(model: nn.Module, block: str, branch: str) -> tuple[str, float]:
    """The module (qualified name) computing the shortcut operand of ``block``'s residual addition whose other
    operand is computed from ``branch`` (``""`` when the shortcut is the block input itself), and the constant
    ``c`` when that other operand is ``c * branch output``.

    Raises:
        ValueError: the block cannot be traced or its shortcut is neither a module nor the block input.
    """
    from advkit.backprop.graph import GraphIndex, forward_scale, is_add
    from advkit.backprop.trace import TraceFailure, trace

    prefix = f"{block}." if block else ""
    rel = branch[len(prefix):]
    where = block or "(model)"
    try:
        ix = GraphIndex(trace(model.get_submodule(block)))
    except TraceFailure as e:
        raise ValueError(f"ghost skip erosion cannot trace residual block {where} ({e}); use ghost_erosion="
                         "'dropout' for this model") from e
    sources = [n for n, names in ix.traced.outputs.items() if rel in names]
    for add in (n for n in ix.nodes if is_add(n)):
        ops = [a for a in (*add.args[:2], *add.kwargs.values()) if ix.is_tensor_operand(a)]
        if len(ops) != 2 or not sources:
            continue
        fed = [any(s is o or ix.is_ancestor(s, o) for s in sources) for o in ops]
        if fed.count(True) != 1:
            continue
        short, bop = ops[fed.index(False)], ops[fed.index(True)]
        if short.op != "placeholder":
            inside = [m for m in ix.traced.outputs.get(short, []) if m]
            if inside:
                return prefix + inside[-1], 1.0  # the outermost module inside the block that returned the shortcut
        elif bop in sources:
            return "", 1.0
        else:  # the erosion is added to the branch module's output, so it must reach the addition linearly
            c = forward_scale(bop)
            if c and any(a in sources for a in bop.args):
                return "", c
            raise ValueError(f"ghost skip erosion: the branch of residual block {where} reaches its addition "
                             f"through more than a constant scale; use ghost_erosion='dropout' for this model")
        raise ValueError(f"ghost skip erosion: the shortcut of residual block {where} is computed by a function, "
                         "not a module; wrap it in an nn.Module or use ghost_erosion='dropout'")
    raise ValueError(f"ghost skip erosion found no addition of branch {branch} in block {where}; use "
                     "ghost_erosion='dropout' for this model")


def residual_blocks(model: nn.Module) -> list[_Block]:
    """The residual blocks of ``model`` in forward order, each with its shortcut module (``[]`` if none)."""
    from advkit.backprop import find_connections

    try:
        found = find_connections(model)
    except ValueError:
        return []
    out = []
    for c in (c for c in found if c.kind == "residual"):
        shortcut, factor = _shortcut_of(model, c.block, c.branch)
        out.append(_Block(c.block, shortcut, c.branch, factor))
    return out


@contextmanager
def skip_erosion(model: nn.Module, generator: torch.Generator, spread: float) -> Iterator[dict[str, Any]]:
    """Inside the block, each forward pass of ``model`` multiplies every residual shortcut by a fresh
    ``lambda ~ U[1 - spread, 1 + spread]`` (one ``torch.rand(n_blocks, generator=generator)`` per pass).

    Yields:
        ``{"blocks": n, "draws": forward passes eroded, "last": the last draw (n,)}``.

    Raises:
        ValueError: ``model`` has no residual block, or one whose shortcut cannot be located.
    """
    blocks = residual_blocks(model)
    if not blocks:
        raise ValueError(f"ghost skip erosion needs residual blocks and {type(model).__name__} has none; use "
                         "ghost_erosion='dropout' (or 'auto')")
    state: dict[str, Any] = {"blocks": len(blocks), "draws": 0, "last": None}
    scales: list[float] = [1.0] * len(blocks)
    inputs: dict[int, torch.Tensor] = {}

    def draw(module: nn.Module, args: Any) -> None:
        u = torch.rand(len(blocks), generator=generator, dtype=torch.float64)
        lam = (1.0 - spread) + 2.0 * spread * u
        scales[:] = lam.tolist()
        state["draws"] += 1
        state["last"] = lam

    def scale_output(i: int) -> Any:
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
            return output * scales[i]
        return hook

    def keep_input(i: int) -> Any:
        def hook(module: nn.Module, args: Any) -> None:
            inputs[i] = args[0]
        return hook

    def add_input(i: int) -> Any:
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
            return output + ((scales[i] - 1.0) / blocks[i].factor) * inputs.pop(i)
        return hook

    handles: list[RemovableHandle] = [model.register_forward_pre_hook(draw)]
    try:
        for i, b in enumerate(blocks):
            if b.shortcut:
                handles.append(model.get_submodule(b.shortcut).register_forward_hook(scale_output(i)))
            else:
                handles.append(model.get_submodule(b.block).register_forward_pre_hook(keep_input(i)))
                handles.append(model.get_submodule(b.branch).register_forward_hook(add_input(i)))
        yield state
    finally:
        for h in handles:
            h.remove()


@contextmanager
def dropout_erosion(model: nn.Module, generator: torch.Generator, rate: float) -> Iterator[dict[str, Any]]:
    """Inside the block, inverted dropout of ``rate`` on the output of every activation module of ``model``
    (a fresh mask per call, drawn from ``generator``).

    Raises:
        ValueError: ``model`` has no activation module.
    """
    acts = [m for m in model.modules() if isinstance(m, ACTIVATIONS)]
    if not acts:
        kinds = ", ".join(a.__name__ for a in ACTIVATIONS)
        raise ValueError(f"ghost dropout erosion found no activation module ({kinds}) in {type(model).__name__}; "
                         "it erodes their outputs")
    state: dict[str, Any] = {"layers": len(acts), "calls": 0}
    keep = 1.0 - rate

    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        state["calls"] += 1
        u = torch.rand(output.shape, generator=generator, dtype=output.dtype, device=generator.device)
        return output * ((u < keep).to(output.device, output.dtype) / keep)

    handles = [m.register_forward_hook(hook) for m in acts]
    try:
        yield state
    finally:
        for h in handles:
            h.remove()


@register_part
@dataclass(frozen=True)
class Ghost(Part):
    """Ghost networks (Li et al. 2020): every forward pass sees a fresh random erosion of the source model.

    ``ghost_erosion``: ``"skip"`` (residual shortcuts times ``U[1 - ghost_range, 1 + ghost_range]``),
    ``"dropout"`` (dropout of rate ``ghost_dropout`` after every activation) or ``"auto"`` (skip erosion on models
    with residual blocks, dropout erosion otherwise; per member of an ensemble). ``ghost_range = 0`` leaves the
    model unchanged (the base attack exactly).
    """

    token: ClassVar[str] = "ghost"
    hook: ClassVar[str] = "scope"
    order: ClassVar[int] = 30
    paper: ClassVar[str] = "Li et al. 2020"
    aliases: ClassVar[dict[str, str]] = {"erosion": "ghost_erosion"}

    ghost_range: float = 0.22
    ghost_dropout: float = 0.006
    ghost_erosion: str = "auto"

    def check(self) -> None:
        r, p = self.ghost_range, self.ghost_dropout
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= r < 1.0:
            raise ValueError(f"ghost_range must be in [0, 1) (the paper's 0.22), got {r!r}")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ValueError(f"ghost_dropout must be in [0, 1) (the authors' 0.006), got {p!r}")
        check_choice("ghost_erosion", self.ghost_erosion, EROSIONS)

    def _erode(self, m: nn.Module, g: torch.Generator) -> AbstractContextManager[dict[str, Any]]:
        skip = self.ghost_erosion == "skip" or (self.ghost_erosion == "auto" and _has_skips(m, "residual"))
        if skip:
            return skip_erosion(m, g, float(self.ghost_range))
        return dropout_erosion(m, g, float(self.ghost_dropout))

    def scope(self, model: nn.Module, ctx: Context) -> AbstractContextManager[Any]:
        """The erosion on ``model``, or on each member of an ensemble (skip erosion: each member with residual
        blocks), drawing from ``ctx.generator``."""
        def enter(m: nn.Module) -> AbstractContextManager[dict[str, Any]]:
            return self._erode(m, ctx.generator)

        if not isinstance(model, Ensemble):
            return enter(model)
        if self.ghost_erosion == "skip":  # ghost_erosion='auto' or 'dropout' erodes a member without them
            return per_member(model, "ghost skip erosion", enter, kind="residual")
        return per_member(model, "ghost", enter, every=True)

    def report(self, found: Any, ctx: Context) -> None:
        def row(s: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in s.items() if k != "last"}

        out: dict[str, Any] = {"erosion": self.ghost_erosion, "range": self.ghost_range, "dropout": self.ghost_dropout}
        if isinstance(found, list):
            out["members"] = [{"member": name, **(row(s) if s is not None else {"untouched": "no residual blocks"})}
                              for name, s in found]
        else:
            out.update(row(found))
        ctx.info["ghost"] = out
