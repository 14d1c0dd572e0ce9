"""The attack contract shared by every attack.

An attack is a frozen configuration plus a pure call::

    attack = advkit.attacks.create("pgd", eps=8/255, steps=10)
    result = attack(model, x, y, target=None, generator=g)

The public ``__call__`` is final: it validates the inputs (``ValueError`` naming the problem), puts the model in
eval mode with frozen parameters and restores both afterwards (even when the attack raises), runs the attack's
``_run``, projects the result onto the budget and ``[0, 1]``, and measures success with one more forward pass.
Subclasses implement ``_run`` only. Gradients come from ``torch.autograd.grad``, never ``loss.backward()``.
Query (black-box) attacks (``black_box = True``, :mod:`advkit.attacks.query.base`) go through the same call: ``_run``
gets a counting query session instead of the model and runs under ``no_grad``, ``start=`` is accepted, and the
result carries the queries spent per image.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar, final

import torch
import torch.nn.functional as F
from torch import nn

from advkit.models.frozen import frozen_eval


@dataclass
class AttackResult:
    """What an attack returns.

    Attributes:
        x_adv: adversarial batch ``(N, C, H, W)`` in ``[0, 1]``, within the budget of ``x``.
        success: bool ``(N,)``: the model predicts ``target`` (targeted) or not ``y`` (untargeted) on ``x_adv``.
        pred: int64 ``(N,)`` predictions on ``x_adv``.
        forward_passes: batched forward passes through the model, including the final success check.
        backward_passes: batched backward passes (vector-Jacobian products) through the model.
        target: the target classes for a targeted attack, else ``None``.
        info: what the attack reports about itself (e.g. the skip connections SGM found and how often its
            hooks fired).
        queries: int64 ``(N,)``: the model queries spent on each image (query attacks), else ``None``.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    pred: torch.Tensor
    forward_passes: int
    backward_passes: int
    target: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)
    queries: torch.Tensor | None = None

    @property
    def success_rate(self) -> float:
        """Share of samples on which the attack succeeded."""
        return float(self.success.float().mean()) if self.success.numel() else 0.0


class Counter:
    """Counts the forward and backward passes an attack spends; attacks call the model through it."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.forward = 0
        self.backward = 0
        self.info: dict[str, Any] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.forward += 1
        return self.model(x)

    @property
    def module(self) -> nn.Module:
        """The model, to freeze and put in eval mode for the attack."""
        return self.model

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for the final success check (one counted forward pass)."""
        return self(x)

    def grad(self, out: torch.Tensor, inputs: torch.Tensor, grad_outputs: torch.Tensor | None = None,
             retain_graph: bool = False) -> torch.Tensor:
        """``d out / d inputs`` by ``torch.autograd.grad`` (one backward pass)."""
        self.backward += 1
        (g,) = torch.autograd.grad(out, inputs, grad_outputs=grad_outputs, retain_graph=retain_graph)
        return g


def attack_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, kind: str) -> torch.Tensor:
    """The loss an attack *ascends*, summed over the batch (so per-sample gradients are independent).

    Args:
        logits: ``(N, K)``.
        y: true labels ``(N,)``.
        target: target labels ``(N,)`` or ``None`` (untargeted).
        kind: ``"ce"`` (cross-entropy; targeted: minus the target's cross-entropy) or ``"margin"`` (logit margin
            of Carlini & Wagner: untargeted ``max_{j != y} z_j - z_y``; targeted ``z_t - max_{j != t} z_j``).
    """
    if kind == "ce":
        if target is None:
            return F.cross_entropy(logits, y, reduction="sum")
        return -F.cross_entropy(logits, target, reduction="sum")
    if kind == "margin":
        cls = y if target is None else target
        own = logits.gather(1, cls[:, None]).squeeze(1)
        other = logits.masked_fill(F.one_hot(cls, logits.shape[1]).bool(), float("-inf")).amax(1)
        return (other - own).sum() if target is None else (own - other).sum()
    raise ValueError(f"loss must be 'ce' or 'margin', got {kind!r}")


def check_eps(eps: float, name: str = "eps") -> None:
    """``ValueError`` unless ``eps`` is a finite number >= 0."""
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (pixel units of [0, 1], e.g. 8/255), got {eps!r}")


@dataclass(frozen=True)
class Attack(ABC):
    """Base class: a frozen configuration. Subclasses are frozen dataclasses implementing :meth:`_run`.

    Class attributes:
        name: registry name.
        norm: ``"linf"``, ``"l2"`` or ``"l0"``: which budget ``eps`` bounds (``l0`` attacks bound themselves).
        targeted_only: the attack needs a target.
        black_box: the attack reaches the model only through a query oracle (:mod:`advkit.attacks.query.oracle`),
            under ``no_grad``; it takes ``start=`` and reports ``AttackResult.queries``.
        takes_path: the attack applies a file (``generator:PATH``, ``uap:PATH``): ``create`` passes ``path=``.
        unused: inherited settings the attack does not use; ``create`` refuses them rather than record a value
            that changed nothing.
    """

    name: ClassVar[str] = "attack"
    norm: ClassVar[str] = "linf"
    targeted_only: ClassVar[bool] = False
    black_box: ClassVar[bool] = False
    takes_path: ClassVar[bool] = False  # named ``NAME:PATH`` (a trained generator, a universal perturbation)
    unused: ClassVar[frozenset[str]] = frozenset()  # inherited settings the attack ignores (JSMA: eps)
    unused_reason: ClassVar[str] = ""  # why, for the error that refuses them

    eps: float = field(default=8 / 255)

    def __post_init__(self) -> None:
        check_eps(self.eps)

    @abstractmethod
    def _run(self, model: Counter, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
             generator: torch.Generator | None) -> torch.Tensor:
        """Return the adversarial batch (it is projected onto the budget and ``[0, 1]`` afterwards)."""

    @final
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, *, keep_mode: bool = False,
                 start: torch.Tensor | None = None) -> AttackResult:
        """Run the attack on ``model`` (pixels in ``[0, 1]`` in, logits out).

        Args:
            model: a classifier taking ``(N, C, H, W)`` pixels in ``[0, 1]``.
            x: clean inputs ``(N, C, H, W)``, ``N >= 1``, in ``[0, 1]``, in the model's float dtype (float32; float64
                images need a float64 model). 8-bit images are refused: pass ``x.float() / 255``.
            y: true labels ``(N,)``, int64.
            target: target labels ``(N,)`` for a targeted attack (each different from ``y``), else ``None``.
            generator: source of randomness (random start, input diversity); the same seed gives the same result.
            keep_mode: leave every module's train / eval mode as it is (parameters are still frozen). For
                adversarial training that crafts through the training-mode network; attackers use eval mode.
            start: query attacks only: the example to start from (for instance a transfer example crafted on
                a surrogate), projected onto the budget around ``x`` first.

        Returns:
            An :class:`AttackResult`.

        Raises:
            ValueError: naming the problem with the inputs (wrong dtype, an empty batch, meta tensors, a model whose
                dtype differs from ``x``'s) and the fix.
        """
        validate_inputs(x, y, target)
        k = getattr(model, "num_classes", None)
        if isinstance(k, int):
            check_labels(y, target, k)
        if self.targeted_only and target is None:
            raise ValueError(f"{self.name} is a targeted attack: pass target= (a label per sample, != y)")
        extra: dict[str, torch.Tensor] = {}
        if start is not None:
            if not self.black_box:
                raise ValueError(f"{self.name} does not take start=: only query attacks (square, nes, simba, hsj) "
                                 f"start from a given example")
            extra["start"] = self.project(check_start(start, x).detach(), x)
        counter = self._open(model, x)
        module = counter.module
        check_model_inputs(module, x)
        with frozen_eval(module, eval_mode=not keep_mode) if module is not None else nullcontext():
            with torch.no_grad() if self.black_box else torch.enable_grad():
                x_adv = self._run(counter, x.detach(), y, target, generator, **extra)
            x_adv = self.project(x_adv.detach(), x)
            with torch.no_grad():
                logits = counter.evaluate(x_adv)
            check_labels(y, target, logits.shape[1])
        pred = logits.argmax(1)
        success = pred == target if target is not None else pred != y
        queries = counter.queries.clone() if self.black_box else None
        return AttackResult(x_adv=x_adv, success=success, pred=pred, forward_passes=counter.forward,
                            backward_passes=counter.backward, target=target, info=counter.info, queries=queries)

    def _open(self, model: nn.Module, x: torch.Tensor) -> Any:
        """What ``_run`` calls the model through: a pass :class:`Counter` (query attacks: a query session)."""
        return Counter(model)

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Project onto the budget around ``x`` and onto ``[0, 1]``."""
        return project(x_adv, x, self.eps, self.norm)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project ``x_adv`` onto the ``norm`` ball of radius ``eps`` around ``x``, then onto ``[0, 1]``.

    For ``linf`` both constraints are boxes, so the result satisfies both exactly. For ``l2`` the clip to
    ``[0, 1]`` after the radial projection can only shrink the perturbation, so the L2 budget still holds.
    ``l0`` attacks bound the number of changed features themselves; only ``[0, 1]`` is enforced here.
    """
    if norm == "linf":
        x_adv = torch.max(torch.min(x_adv, x + eps), x - eps)
    elif norm == "l2":
        d = x_adv - x
        n = d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1)))
        x_adv = x + d * torch.clamp(eps / n, max=1.0)
    elif norm != "l0":
        raise ValueError(f"unknown norm {norm!r}")
    return x_adv.clamp(0.0, 1.0)


def check_budget(eps: float, norm: str = "linf", *, allow_large: bool = False, flag: str | None = "--allow-large-eps",
                 shape: tuple[int, ...] | None = None) -> None:
    """``ValueError`` for a budget larger than the whole pixel box, checked against the attack's own ``norm``.

    An L-inf ``eps`` above 1 covers the whole range of pixels in ``[0, 1]`` and is almost always a budget on the
    0-255 scale (``8`` meant as ``8/255``): refused unless ``allow_large`` (``flag`` names that switch; ``None``:
    there is none). An L2 radius above 1 is ordinary; one above ``sqrt(C * H * W)`` (images of ``shape``, when
    given) is more than the distance between an all-black and an all-white image, and is refused.
    """
    if norm == "linf" and eps > 1 and not allow_large:
        fix = f"If you mean {eps:g}, pass {flag}" if flag else "Use at most 1"
        raise ValueError(f"eps {eps:g} is larger than the whole pixel range for an L-inf radius: advkit's budgets "
                         f"are in pixel units of [0, 1], so 8 on the 0-255 scale is 8/255 ({8 / 255:.4f}). {fix}")
    if norm == "l2" and shape is not None:
        d = math.prod(shape)
        if eps > math.sqrt(d):
            raise ValueError(f"eps {eps:g} is an L2 radius larger than the whole image box of "
                             f"{'x'.join(map(str, shape))} images (sqrt({d}) = {math.sqrt(d):.2f}, the L2 diameter "
                             f"of the pixel cube: the distance from an all-black to an all-white image); use at most "
                             f"{math.sqrt(d):.2f} (or an L-inf budget: norm linf)")


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
