"""FAB-T: Croce & Hein, ICML 2020, "Minimally distorted Adversarial Examples with a Fast Adaptive Boundary Attack",
in the targeted form AutoAttack's standard version runs (Croce & Hein, ICML 2020, "Reliable evaluation of
adversarial robustness with an ensemble of diverse parameter-free attacks").

FAB looks for the adversarial example of smallest ``norm`` distance to ``x``. At the current point ``x_k`` it
linearises the decision boundary between a target class ``t`` and the true class ``y``,

    df = f_t(x_k) - f_y(x_k),    w = grad f_t(x_k) - grad f_y(x_k),    {z : df + <w, z - x_k> = 0},

and projects onto that hyperplane intersected with the box ``[0, 1]^d`` (the paper's projection, exact: a
one-dimensional monotone dual problem solved by sorting the breakpoints) from the current point (``d_1``) and from
the original (``d_2``). The biased step extrapolates by ``eta`` and mixes the two,

    alpha = min(||d_1|| / (||d_1|| + ||d_2||), alpha_max),
    x_k+1 = clip((x_k + eta d_1) (1 - alpha) + (x + eta d_2) alpha, 0, 1),

and once ``x_k+1`` is adversarial it is kept if it is the closest found so far, and the backward step
``x_k+1 = x + beta (x_k+1 - x)`` moves it towards the original. The first run starts at ``x``; restarts
(``n_restarts > 1``) start from a random point at distance ``eps / 2`` (the original code's rule).

FAB-T (as in AutoAttack): for each of the ``n_target_classes`` classes the model scores highest after the true
one, in that order (capped at the number of classes - 1), FAB runs on the points still robust; a point counts as
broken when the closest adversarial example found is within ``eps``. As an evaluation attack it returns that example
there and ``x`` elsewhere, so ``AttackResult.success`` marks exactly the points fooled within ``eps``. Points the
model misclassifies already are not attacked (``x`` fools them). With ``target=`` given (advkit's extension), FAB
runs once per sample towards that class, linearising the target against its strongest rival at the current point,
and a point is adversarial when it is classified as the target.

Defaults are the original code's (``fab_base.py``) as AutoAttack's standard version sets them: ``n_iter = 100``,
``n_restarts = 1``, ``n_target_classes = 9``, ``alpha_max = 0.1``, ``eta = 1.05``, ``beta = 0.9``. Cost per
iteration: one forward and one backward pass for the linearisation, one forward pass to check the new point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from advkit.attacks.core.base import Counter, ModelAttack
from advkit.attacks.core.budget import distance
from advkit.attacks.core.checks import check_choice, check_number
from advkit.attacks.core.registry import register_attack

__all__ = ["FABT", "fab_step", "project_hyperplane", "distance"]


def _solve_dual(weight: torch.Tensor, room: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``(n,)``: the smallest ``lam >= 0`` with ``sum_i weight_i min(lam, room_i) = c`` per row; where no ``lam``
    reaches ``c`` (the box stops the hyperplane being reached), the largest ``room`` (every coordinate moves as far
    as the box allows). ``weight, room >= 0`` are ``(n, d)``, ``c >= 0`` is ``(n,)``.

    The left side is piecewise linear and nondecreasing in ``lam`` with breakpoints at ``room``: sort them, evaluate
    it at each, and solve the linear piece that crosses ``c``.
    """
    rs, order = room.sort(dim=1)
    ws = weight.gather(1, order)
    below = torch.cumsum(rs * ws, 1)  # sum_{i <= j} r_i w_i
    tail = ws.flip(1).cumsum(1).flip(1)  # sum_{i >= j} w_i
    above = torch.cat([tail[:, 1:], tail.new_zeros(tail.shape[0], 1)], 1)  # sum_{i > j} w_i
    h = rs * above + below  # the left side at lam = r_j
    k = (h < c[:, None]).sum(1)  # breakpoints passed before reaching c
    inside = k < rs.shape[1]
    kk = k.clamp(max=rs.shape[1] - 1)[:, None]
    prefix = (below - rs * ws).gather(1, kk).squeeze(1)  # sum_{i < k} r_i w_i
    slope = tail.gather(1, kk).squeeze(1)  # sum_{i >= k} w_i
    lam = torch.where(slope > 0, (c - prefix) / slope.clamp_min(torch.finfo(slope.dtype).tiny), rs[:, -1])
    return torch.where(inside, lam, rs[:, -1]).clamp_min(0)


def project_hyperplane(p: torch.Tensor, w: torch.Tensor, c: torch.Tensor, norm: str) -> torch.Tensor:
    """The smallest step ``d`` (in ``norm``) from ``p`` onto the hyperplane intersected with the box: the minimiser
    of ``||d||`` subject to ``c + <w, d> = 0`` and ``0 <= p + d <= 1``, where ``c`` is the affine function's value
    at ``p`` (the paper's projection). Where the box makes the hyperplane unreachable, every coordinate moves to the
    box's face on the hyperplane's side (the original code's choice). Coordinates with ``w_i = 0`` do not move.

    Args:
        p: points ``(n, d)`` in ``[0, 1]``.
        w: the hyperplane's normals ``(n, d)``.
        c: ``(n,)``, the affine function ``c + <w, z - p>`` at ``z = p``.
        norm: ``"linf"`` or ``"l2"``.

    Returns:
        ``d``, ``(n, d)``, in the dtype of ``p`` (computed in float64).
    """
    dtype = p.dtype
    p, w, c = p.double(), w.double(), c.double()
    v = w * torch.where(c >= 0, 1.0, -1.0)[:, None]  # orient so the function must fall by |c|
    room = torch.where(v > 0, p, torch.where(v < 0, 1 - p, torch.zeros_like(p)))  # how far each coordinate can go
    if norm == "linf":
        lam = _solve_dual(v.abs(), room, c.abs())
        d = -v.sign() * torch.minimum(lam[:, None], room)
    else:
        r = torch.where(v != 0, room / v.abs().clamp_min(torch.finfo(v.dtype).tiny), torch.zeros_like(room))
        lam = _solve_dual(v * v, r, c.abs())
        d = -v * torch.minimum(lam[:, None], r)
    return d.to(dtype)


def fab_step(x1: torch.Tensor, x0: torch.Tensor, df: torch.Tensor, dg: torch.Tensor, norm: str, alpha_max: float,
             eta: float) -> torch.Tensor:
    """One FAB step (before the check and the backward step).

    Args:
        x1: the current points ``(n, C, H, W)``; x0: the originals; df: ``(n,)`` the logit difference
            ``f_t - f_y`` at ``x1``; dg: ``(n, C, H, W)`` its gradient.
        norm: ``"linf"`` or ``"l2"``; alpha_max: the cap on the bias towards the original; eta: the extrapolation.

    Returns:
        The next points, ``(n, C, H, W)`` in ``[0, 1]``.
    """
    n = x1.shape[0]
    w = dg.flatten(1)
    a, b = x1.flatten(1), x0.flatten(1)
    c_at_x0 = df + (w * (b - a)).sum(1)
    d = project_hyperplane(torch.cat([a, b]), torch.cat([w, w]), torch.cat([df, c_at_x0]), norm)
    size = distance(d, norm).clamp_min(1e-8)
    alpha = (size[:n] / (size[:n] + size[n:])).clamp(0.0, alpha_max).view(-1, *[1] * (x1.ndim - 1))
    d1, d2 = d[:n].view_as(x1), d[n:].view_as(x1)
    return ((x1 + eta * d1) * (1 - alpha) + (x0 + eta * d2) * alpha).clamp(0.0, 1.0)


@register_attack
@dataclass(frozen=True)
class FABT(ModelAttack):
    """FAB-T (Croce & Hein, ICML 2020), L-inf or L2: the closest adversarial example towards each of the top
    ``n_target_classes`` classes, counted as a success within ``eps``.

    Attributes:
        eps: the budget (pixel units of ``[0, 1]``) a found example must be within; also the scale of the random
            restarts (``eps / 2``).
        norm: ``"linf"`` or ``"l2"``.
        n_iter: FAB iterations per target class and restart (original: 100).
        n_restarts: runs per target class; the first from ``x``, the others from random points (AutoAttack
            standard: 1).
        n_target_classes: how many of the highest-scored other classes to target (AutoAttack standard: 9).
        alpha_max: the cap on the bias towards the original point (original: 0.1).
        eta: the extrapolation of the projection step (original: 1.05).
        beta: the backward step towards the original once adversarial (original: 0.9).
    """

    name: ClassVar[str] = "fab-t"
    kind: ClassVar[str] = "gradient"

    n_iter: int = 100
    n_restarts: int = 1
    n_target_classes: int = 9
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("norm (FAB-T's distance: 'linf' or 'l2')", self.norm, ("linf", "l2"))
        check_number("n_iter (FAB iterations per target class, e.g. 100)", self.n_iter, lo=1, integer=True)
        check_number("n_restarts (runs per target class, e.g. 1)", self.n_restarts, lo=1, integer=True)
        check_number("n_target_classes (top classes to target, e.g. 9)", self.n_target_classes, lo=1, integer=True)
        check_number("alpha_max (bias towards the original, e.g. 0.1)", self.alpha_max, lo=0, hi=1)
        check_number("eta (extrapolation, >= 1, e.g. 1.05)", self.eta, lo=1)
        check_number("beta (backward step, in (0, 1], e.g. 0.9)", self.beta, lo=0, hi=1, lo_open=True)

    def _run(self, model: Counter, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
             generator: torch.Generator | None) -> torch.Tensor:
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        with torch.no_grad():
            logits = model(x)
        out = x.clone()
        if target is not None:
            robust = logits.argmax(1) != target
            plan = [target]
        else:
            robust = logits.argmax(1) == y
            ranked = logits.argsort(1, descending=True)
            plan = [ranked[:, k] for k in range(1, min(self.n_target_classes, logits.shape[1] - 1) + 1)]
        found = torch.zeros_like(robust)
        for classes in plan:
            for restart in range(self.n_restarts):
                todo = robust.nonzero().flatten()
                if todo.numel() == 0:
                    break
                adv, dist = self._single(model, x[todo], y[todo], classes[todo], target is not None, restart > 0, g)
                hit = dist <= self.eps
                out[todo[hit]] = adv[hit]
                robust[todo[hit]] = False
                found[todo[hit]] = True
        model.info.update(fab_found=int(found.sum()), fab_targets=len(plan))
        return out

    def _single(self, model: Counter, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, targeted: bool,
                random_start: bool, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One FAB run towards the classes ``t``: the closest adversarial points found and their distances
        (``inf`` where none was found)."""
        n = x0.shape[0]
        x1 = x0.clone()
        if random_start:
            x1 = (x0 + self._random_offset(x0, g)).clamp(0.0, 1.0)
        best, best_dist = x0.clone(), torch.full((n,), float("inf"), device=x0.device)
        rows = torch.arange(n, device=x0.device)
        shape = (-1, *[1] * (x0.ndim - 1))
        for _ in range(self.n_iter):
            xg = x1.detach().requires_grad_(True)
            out = model(xg)
            # FAB-T: the target against the true class; a targeted call: the target against its strongest rival
            rival = out.detach().scatter(1, t[:, None], float("-inf")).argmax(1) if targeted else y
            diff = out[rows, t] - out[rows, rival]
            dg = model.grad(diff.sum(), xg)
            with torch.no_grad():
                x1 = fab_step(x1, x0, diff.detach(), dg, self.norm, self.alpha_max, self.eta)
                pred = model(x1).argmax(1)
                adv = pred == t if targeted else pred != y
                dist = distance(x1 - x0, self.norm)
                better = adv & (dist < best_dist)
                best = torch.where(better.view(shape), x1, best)
                best_dist = torch.where(better, dist, best_dist)
                x1 = torch.where(adv.view(shape), x0 + self.beta * (x1 - x0), x1)
        return best, best_dist

    def _random_offset(self, x0: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """A random offset of ``norm`` length ``eps / 2`` per image (the original's restart rule)."""
        n = x0.shape[0]
        if self.norm == "linf":
            u = 2 * torch.rand(x0.shape, generator=g, dtype=x0.dtype) - 1
        else:
            u = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
        u = u.to(x0.device)
        return 0.5 * self.eps * u / distance(u, self.norm).clamp_min(1e-12).view(n, *[1] * (x0.ndim - 1))
