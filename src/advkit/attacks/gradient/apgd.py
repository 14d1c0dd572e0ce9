"""APGD: Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks" (Algorithm 1, Auto-PGD), with the cross-entropy loss (``apgd-ce``), the DLR loss
(``apgd-dlr``) and the targeted DLR loss over the top classes (``apgd-t``), L-inf and L2.

From a random start ``x^(0)`` on the surface of the ball, with step ``eta^(0) = 2 eps`` and ``P`` the projection
onto the ball and ``[0, 1]`` (:func:`advkit.attacks.core.budget.project`), iteration ``k = 0 .. n_iter - 1`` is

    z^(k+1) = P(x^(k) + eta^(k) * d(grad f(x^(k))))            (d: sign for L-inf, grad / ||grad||_2 for L2)
    x^(k+1) = P(x^(k) + a (z^(k+1) - x^(k)) + (1 - a)(x^(k) - x^(k-1)))     (a = 1 at k = 0, then alpha = 0.75)

keeping per sample the point of highest loss ``x_max`` (strict improvement) and its gradient. At the checkpoints
``w_j = ceil(p_j n_iter)``, ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``
(22, 41, 57, 70, 80, 87, 93, 99 for 100 iterations), right after ``x^(w_j)`` is computed, the step of a sample is
halved and its iterate restarts from ``x_max`` (with the gradient kept there) when

1. the loss went up in at most ``rho * (w_j - w_{j-1})`` of the steps ``f(x^(i+1)) > f(x^(i))``,
   ``i = w_{j-1} .. w_j - 1``, or
2. the step was not halved at ``w_{j-1}`` and the best loss did not improve since ``w_{j-1}``.

All conditions are per sample. The losses (logits ``z``, ``pi`` the classes sorted by decreasing logit):

- ``ce``: cross-entropy; ``dlr``: ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)``;
- targeted DLR (``apgd-t``): ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``, run for each of the
  ``n_target_classes`` (9) classes with the largest clean logits other than ``y``, in that order, each on the points
  still robust.

Only points the model classifies correctly are attacked; each restart (``n_restarts``, 1) and each target runs on the
points still robust, with a fresh random start drawn from the call's generator (``torch.rand`` on the whole
still-robust batch, uniform in ``[-1, 1]`` scaled to L-inf norm ``eps``; L2: ``torch.randn`` scaled to norm ``eps``).
The result is, per sample, the first point that fooled the model (the start included), else the highest-loss point
found; ``info["apgd_iteration"]`` holds the iteration that fooled it (0: the start, -1: never, clean misclassified
points included), ``info["apgd_step_size"]`` the step size at the end of its last run (NaN: never attacked), and
``apgd-t`` adds ``info["apgd_target"]`` (the target class whose run fooled it, else -1). The conditions use each
sample's own loss; the gradient is that of the batch's summed per-sample losses (the per-sample gradients).
Called with ``target=``, every APGD attacks that target (``ce``: minus the target's cross-entropy; the DLR attacks:
the targeted DLR loss) and success means reaching it.

Defaults and choices: ``n_iter = 100``, ``rho = 0.75``, ``alpha = 0.75``, the initial step ``2 eps`` and the start on
the ball's surface are the paper's and the original code's (fra31/auto-attack, ``autopgd_base.py``). Differences
from that code: the checkpoints follow the paper's formula (the code's ``k - 0.03 n`` schedule gives the same ones
for 100 iterations); condition 1 counts the first window from ``f(x^(0))`` as the paper writes (the code compares
``f(x^(1))`` with an unset entry); condition 2 can fire at the first checkpoint as in the paper (the code disables
it there); condition 1 keeps the code's ``<=`` (the paper writes ``<``); the first rather than the last fooling
point is returned, and robust points get their highest-loss point instead of the clean image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from advkit.attacks.core.base import Counter, ModelAttack
from advkit.attacks.core.budget import check_budget, project, step_direction
from advkit.attacks.core.checks import check_choice, check_number
from advkit.attacks.core.registry import register_attack

__all__ = ["APGDCE", "APGDDLR", "APGDT", "checkpoints", "dlr_loss", "dlr_targeted_loss"]

Loss = Callable[[torch.Tensor], torch.Tensor]


def checkpoints(n_iter: int) -> list[int]:
    """The paper's checkpoints ``w_1 < w_2 < ... <= n_iter`` (``w_0 = 0`` left out)."""
    p_prev, p = 0.0, 0.22
    out: list[int] = []
    while True:
        w = math.ceil(p * n_iter - 1e-9)  # 0.22 * 100 is 22.000000000000004 in floats
        if w > n_iter:
            return out
        if not out or w > out[-1]:
            out.append(w)
        p_prev, p = p, p + max(p - p_prev - 0.03, 0.06)


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample DLR loss ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)``, ``(N,)``."""
    z_sorted = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return -(z_y - other) / (z_sorted[:, 0] - z_sorted[:, 2] + 1e-12)


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per-sample targeted DLR loss ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``, ``(N,)``."""
    z_sorted = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None])[:, 0]
    z_t = logits.gather(1, t[:, None])[:, 0]
    return -(z_y - z_t) / (z_sorted[:, 0] - (z_sorted[:, 2] + z_sorted[:, 3]) / 2 + 1e-12)


@dataclass(frozen=True)
class _APGD(ModelAttack):
    """The APGD loop shared by the three losses (see the module docstring).

    Attributes:
        eps: the budget in pixel units of ``[0, 1]``, > 0; L-inf at most 1.
        norm: ``"linf"`` or ``"l2"``.
        n_iter: iterations per run (paper: 100).
        rho: the share of loss increases under which the step is halved (paper: 0.75).
        n_restarts: runs from fresh random starts, each on the points still robust (AutoAttack: 1).
        eot_iter: gradients averaged per iteration, each from its own forward pass (Athalye et al.'s EOT against
            randomised models; AutoAttack's ``rand`` version: 20); 1 for deterministic models.
    """

    kind: ClassVar[str] = "gradient"
    loss: ClassVar[str] = "ce"
    momentum: ClassVar[float] = 0.75  # alpha of the paper

    n_iter: int = 100
    rho: float = 0.75
    n_restarts: int = 1
    eot_iter: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("norm", self.norm, ("linf", "l2"))
        if self.eps <= 0:
            raise ValueError(f"eps must be > 0 for {self.name} (its first step is 2 * eps), got {self.eps!r}")
        check_budget(self.eps, self.norm, flag=None)
        check_number("n_iter (the iterations per run)", self.n_iter, lo=1, integer=True)
        check_number("rho (the share of loss increases that keeps the step)", self.rho, lo=0, hi=1, lo_open=True)
        check_number("n_restarts (random restarts, 1 or more)", self.n_restarts, lo=1, integer=True)
        check_number("eot_iter (gradients averaged per iteration, 1 or more)", self.eot_iter, lo=1, integer=True)

    def _check_classes(self, k: int, targeted: bool = False) -> None:
        need = 4 if self.loss == "dlr-t" or (self.loss == "dlr" and targeted) else 3 if self.loss == "dlr" else 2
        if k < need:
            raise ValueError(f"{self.name} needs a model with at least {need} classes (its loss reads the "
                             f"{need - 1} largest other logits), got {k}; use apgd-ce")

    def _run(self, model: Counter, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
             generator: torch.Generator | None) -> torch.Tensor:
        check_budget(self.eps, self.norm, flag=None, shape=tuple(x.shape[1:]))
        k = getattr(model.model, "num_classes", None)
        if isinstance(k, int):
            self._check_classes(k, target is not None)
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        with torch.no_grad():
            logits = model(x)
        self._check_classes(logits.shape[1], target is not None)
        n = x.shape[0]
        goal = y if target is None else target
        fooled = logits.argmax(1) != y if target is None else logits.argmax(1) == target
        out = x.clone()
        best_loss = torch.full((n,), float("-inf"), dtype=x.dtype, device=x.device)
        iteration = torch.full((n,), -1, dtype=torch.long, device=x.device)
        step = torch.full((n,), float("nan"), dtype=x.dtype, device=x.device)
        runs = self._targets(logits, y, target)
        for t in runs:
            for _ in range(self.n_restarts):
                idx = (~fooled).nonzero().flatten()
                if idx.numel() == 0:
                    break
                yi, ti = y[idx], None if t is None else t[idx]
                loss = self._loss_fn(yi, ti)
                first, hit, at, xb, lb, st = _apgd_run(model, x[idx], goal[idx], loss, self.eps, self.norm,
                                                       self.n_iter, self.rho, self.momentum, g,
                                                       untargeted=target is None, eot_iter=self.eot_iter)
                better = ~hit & (lb > best_loss[idx])
                out[idx[hit]] = first[hit]
                out[idx[better]] = xb[better]
                best_loss[idx[better]] = lb[better]
                iteration[idx[hit]] = at[hit]
                step[idx] = st
                fooled[idx[hit]] = True
                self._record(model, idx[hit], t)
        model.info["apgd_iteration"] = iteration
        model.info["apgd_step_size"] = step
        return out

    def _targets(self, logits: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None) -> list[torch.Tensor | None]:
        """The runs' target classes: ``None`` for an untargeted loss (one run)."""
        return [target]

    def _record(self, model: Counter, idx: torch.Tensor, t: torch.Tensor | None) -> None:
        """Note which run fooled the points ``idx`` (``apgd-t``: the target)."""

    def _loss_fn(self, y: torch.Tensor, t: torch.Tensor | None) -> Loss:
        """The per-sample loss ``(N,)`` of logits that the run maximises."""
        if self.loss == "ce":
            return (lambda z: F.cross_entropy(z, y, reduction="none")) if t is None else (
                lambda z: -F.cross_entropy(z, t, reduction="none"))
        if t is None:
            return lambda z: dlr_loss(z, y)
        return lambda z: dlr_targeted_loss(z, y, t)


def _start(x: torch.Tensor, eps: float, norm: str, g: torch.Generator) -> torch.Tensor:
    """A random point on the surface of the ball around ``x``, clipped to ``[0, 1]`` (one draw for the batch)."""
    flat = (1, *([1] * (x.ndim - 1)))
    if norm == "linf":
        u = (2 * torch.rand(x.shape, generator=g, dtype=x.dtype) - 1).to(x.device)
        scale = u.flatten(1).abs().amax(1).view(-1, *flat[1:]) + 1e-12
    else:
        u = torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
        scale = u.flatten(1).norm(dim=1).view(-1, *flat[1:]) + 1e-12
    return (x + eps * u / scale).clamp(0.0, 1.0)


def _apgd_run(model: Counter, x: torch.Tensor, goal: torch.Tensor, loss_fn: Loss, eps: float,
              norm: str, n_iter: int, rho: float, momentum: float, g: torch.Generator,
              untargeted: bool, eot_iter: int = 1) -> tuple[torch.Tensor, ...]:
    """One APGD run from a random start on the batch ``x``; success is ``pred != goal`` (``untargeted``, ``goal``
    the true labels) or ``pred == goal`` (the target). With ``eot_iter`` > 1 the loss and the gradient of each
    point are the means over that many forward passes (EOT) and success is judged on the last one, as the original's
    ``eot_iter`` does (it keeps the last pass's loss; the mean is steadier under the model's randomness).

    Returns:
        ``(first, hit, at, x_max, f_max, step)``: the first fooling point ``(N, C, H, W)`` and whether there is one
        ``(N,)``, the iteration it was found at, the highest-loss point and its loss, and the final step sizes.
    """
    n = x.shape[0]
    view = (-1, *([1] * (x.ndim - 1)))

    def evaluate(xk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xk = xk.detach().requires_grad_(True)
        total_loss, total_grad = torch.zeros(()), torch.zeros(())
        for _ in range(eot_iter):
            logits = model(xk)
            loss = loss_fn(logits)
            total_grad = total_grad + model.grad(loss.sum(), xk).detach()
            total_loss = total_loss + loss.detach()
        pred = logits.detach().argmax(1)
        hit = (pred != goal) if untargeted else (pred == goal)
        return total_loss / eot_iter, total_grad / eot_iter, hit

    x_k = _start(x, eps, norm, g)
    loss, grad, hit = evaluate(x_k)
    first = x_k.clone()
    at = torch.where(hit, 0, -1)
    x_max, grad_max, f_max = x_k.clone(), grad.clone(), loss.clone()
    step = torch.full((n,), 2.0 * eps, dtype=x.dtype, device=x.device)
    x_prev = x_k
    history = [loss]
    marks = [0, *checkpoints(n_iter)]
    j = 1
    f_max_last, halved_last = f_max.clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
    for k in range(n_iter):
        a = 1.0 if k == 0 else momentum
        with torch.no_grad():
            z = project(x_k + step.view(view) * step_direction(grad, norm), x, eps, norm)
            x_new = project(x_k + a * (z - x_k) + (1 - a) * (x_k - x_prev), x, eps, norm)
        x_prev, x_k = x_k, x_new
        loss, grad, fooled = evaluate(x_k)
        new = fooled & ~hit
        first[new] = x_k[new]
        at[new] = k + 1
        hit |= fooled
        up = loss > f_max
        x_max[up], grad_max[up], f_max[up] = x_k[up], grad[up], loss[up]
        history.append(loss)
        if j < len(marks) and k + 1 == marks[j]:
            lo, hi = marks[j - 1], marks[j]
            ups = sum((history[i + 1] > history[i]).int() for i in range(lo, hi))
            cond1 = ups <= rho * (hi - lo)
            cond2 = ~halved_last & (f_max <= f_max_last)
            halve = cond1 | cond2
            step[halve] /= 2
            x_k = torch.where(halve.view(view), x_max, x_k)
            grad = torch.where(halve.view(view), grad_max, grad)
            halved_last, f_max_last = halve, f_max.clone()
            j += 1
    return first, hit, at, x_max, f_max, step


@register_attack
@dataclass(frozen=True)
class APGDCE(_APGD):
    """APGD with the cross-entropy loss (Croce & Hein, ICML 2020), untargeted; L-inf or L2."""

    name: ClassVar[str] = "apgd-ce"
    loss: ClassVar[str] = "ce"


@register_attack
@dataclass(frozen=True)
class APGDDLR(_APGD):
    """APGD with the DLR loss (Croce & Hein, ICML 2020), untargeted; L-inf or L2."""

    name: ClassVar[str] = "apgd-dlr"
    loss: ClassVar[str] = "dlr"


@register_attack
@dataclass(frozen=True)
class APGDT(_APGD):
    """APGD-T (Croce & Hein, ICML 2020): the targeted DLR loss towards each of the ``n_target_classes`` classes
    with the largest clean logits other than the true one, each on the points still robust; a point counts as
    fooled when it is misclassified. Called with ``target=``, it attacks that target only.

    Attributes:
        n_target_classes: how many target classes to try (AutoAttack: 9); fewer than the model's classes.
    """

    name: ClassVar[str] = "apgd-t"
    loss: ClassVar[str] = "dlr-t"

    n_target_classes: int = 9

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("n_target_classes (the target classes tried)", self.n_target_classes, lo=1, integer=True)

    def _check_classes(self, k: int, targeted: bool = False) -> None:
        super()._check_classes(k, targeted)
        if self.n_target_classes >= k and not targeted:  # a given target replaces the top classes
            raise ValueError(f"n_target_classes must be below the model's {k} classes (the classes other than the "
                             f"true one), got {self.n_target_classes}; pass n_target_classes={k - 1} or fewer")

    def _targets(self, logits: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None) -> list[torch.Tensor | None]:
        if target is not None:
            return [target]
        order = logits.detach().scatter(1, y[:, None], float("-inf")).argsort(1, descending=True)
        return [order[:, i] for i in range(self.n_target_classes)]

    def _run(self, model: Counter, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
             generator: torch.Generator | None) -> torch.Tensor:
        model.info["apgd_target"] = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
        return super()._run(model, x, y, target, generator)

    def _record(self, model: Counter, idx: torch.Tensor, t: torch.Tensor | None) -> None:
        if t is not None:
            model.info["apgd_target"][idx] = t[idx]
