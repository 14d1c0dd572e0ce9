"""HopSkipJump (Chen, Jordan & Wainwright, IEEE S&P 2020): a decision-based attack that needs only top-1 labels.

Start from an adversarial point (``start=`` when it is adversarial; else, targeted, another image of the batch
labelled with the target; else uniform noise, up to ``init_tries`` draws, blended toward ``x`` by a binary
search), then repeat:

1. binary search on the segment (L2) or the box (L-inf) between ``x`` and the point, to the boundary, to a
   tolerance ``theta = gamma / d^(3/2)`` (L2) or ``gamma / d^2`` (L-inf);
2. estimate the boundary's normal from ``100 sqrt(t)`` (at most ``max_evals``) random unit directions of radius
   ``delta`` (``0.1`` at ``t = 1``, then ``sqrt(d) theta dist`` L2 or ``d theta dist`` L-inf), with the mean
   decision as baseline;
3. step along it (its sign, L-inf) by ``dist / sqrt(t)``, halved until the point is adversarial again.

Every decision is one query. An image stops as soon as a query within ``eps`` of ``x`` comes back adversarial (in
whichever phase: the reference runs a fixed number of iterations), or when its budget is spent: the last iteration
it can pay for estimates the gradient from fewer directions, so that the budget is used, not left over. The paper's
defaults: ``gamma = 1``, 100 initial evaluations, at most 10,000, geometric step-size search. Candidates are
clipped to ``[0, 1]`` before they are queried (the reference code tests the unclipped point in the step-size
search).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from advkit.attacks.core.budget import distance, step_direction
from advkit.attacks.core.checks import check_number
from advkit.attacks.core.registry import register_attack
from advkit.attacks.query.base import QueryAttack, rand, randn
from advkit.attacks.query.oracle import QuerySession

__all__ = ["HopSkipJump"]

Decide = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]   # (rows, owners) -> adversarial, one query each
Mask = Callable[[torch.Tensor], torch.Tensor]                    # image indices -> which may still query


def _view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.ndim - 1)))


@register_attack
@dataclass(frozen=True)
class HopSkipJump(QueryAttack):
    """HopSkipJump (Chen et al. 2020), L2 or L-inf, decision-based: a label-only oracle is enough."""

    name: ClassVar[str] = "hsj"
    oracle_output: ClassVar[str] = "label"

    eps: float = 2.0
    norm: str = "l2"
    gamma: float = 1.0
    init_evals: int = 100
    max_evals: int = 10_000
    init_tries: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        for field in ("init_evals", "max_evals", "init_tries"):
            check_number(field, getattr(self, field), lo=1, integer=True)
        check_number("gamma", self.gamma, lo=0, lo_open=True)

    def _search(self, oracle: QuerySession, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                g: torch.Generator, start: torch.Tensor | None) -> torch.Tensor:
        n = x.shape[0]
        if n == 0:
            return x.clone()
        d = math.prod(x.shape[1:])
        theta = self.gamma / (d * math.sqrt(d)) if self.norm == "l2" else self.gamma / d ** 2

        reach = self.eps * (1 + 1e-6) + 1e-7              # within eps, up to float rounding of the projection
        won = torch.zeros(n, dtype=torch.bool, device=x.device)
        best = x.clone()

        def adversarial(rows: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
            """The decisions on ``rows``; the first adversarial row within eps of its image is that image's
            success, and the image stops there (in whatever phase it came up)."""
            lab = oracle.labels(rows, owner)
            hit = lab != y[owner] if target is None else lab == target[owner]
            close = hit & ~won[owner] & (distance(rows - x[owner], self.norm) <= reach)
            for r in close.nonzero().flatten().tolist():
                i = int(owner[r])
                if not won[i]:
                    won[i], best[i] = True, rows[r]
            return hit

        def live(idx: torch.Tensor) -> torch.Tensor:
            return (oracle.remaining()[idx] > 0) & ~won[idx]

        adv, found = self._initialise(live, adversarial, x, y, target, g, start)
        dist = torch.full((n,), float("inf"), device=x.device)
        dist[found] = distance(adv[found] - x[found], self.norm)
        dist_post = torch.zeros(n, device=x.device)
        idx = (found & live(torch.arange(n, device=x.device))).nonzero().flatten()
        if idx.numel():
            adv[idx], dist_post[idx] = self._boundary(live, adversarial, x[idx], adv[idx], idx, theta)
            dist[idx] = distance(adv[idx] - x[idx], self.norm)
        # the last iteration an image's budget allows runs on fewer directions: its budget less what a binary
        # search and a few step halvings need, if that still leaves `init_evals / 4` directions
        reserve = math.ceil(math.log2(1 / theta)) + 5
        t = 0
        while True:
            t += 1
            evals = min(int(self.init_evals * math.sqrt(t)), self.max_evals)
            todo = found & ~won & (dist > reach)
            left = oracle.remaining()
            full = (todo & (left >= evals + reserve)).nonzero().flatten()
            last = (todo & (left < evals + reserve) & (left >= reserve + max(self.init_evals // 4, 1)))
            last = last.nonzero().flatten()
            if full.numel() == 0 and last.numel() == 0:
                break
            for run, k in ((full, evals), (last, int(left[last].min()) - reserve if last.numel() else 0)):
                if run.numel() == 0:
                    continue
                if t == 1:
                    delta = torch.full((run.numel(),), 0.1, device=x.device)
                else:
                    scale = math.sqrt(d) if self.norm == "l2" else d
                    delta = scale * theta * dist_post[run]
                grad = self._normal(adversarial, adv[run], run, delta, k, g)
                update = step_direction(grad, "linf") if self.norm == "linf" else grad  # grad: a unit normal
                moved, ok = self._step(live, adversarial, adv[run], update, dist[run] / math.sqrt(t), run)
                go = run[ok]
                if go.numel():
                    new, post = self._boundary(live, adversarial, x[go], moved[ok], go, theta)
                    adv[go], dist_post[go] = new, post
                    dist[go] = distance(adv[go] - x[go], self.norm)
        return torch.where(_view(won, x), best, torch.where(_view(found, x), adv, x))

    def _initialise(self, live: Mask, adversarial: Decide, x: torch.Tensor, y: torch.Tensor,
                    target: torch.Tensor | None, g: torch.Generator,
                    start: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """An adversarial point per image (``found``), from ``start``, the batch (targeted) or noise."""
        n = x.shape[0]
        every = torch.arange(n, device=x.device)
        adv = x.clone()
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        if start is not None:
            hit = adversarial(start, every)
            adv[hit], found = start[hit], hit
        if target is not None:
            for i in (~found).nonzero().flatten().tolist():
                same = (y == target[i]).nonzero().flatten()
                if same.numel() and bool(live(every[i:i + 1])[0]):
                    j = int(same[0])
                    if bool(adversarial(x[j:j + 1], every[i:i + 1])[0]):
                        adv[i], found[i] = x[j], True
        noise = torch.zeros_like(x)
        drawn = torch.zeros(n, dtype=torch.bool, device=x.device)
        for _ in range(self.init_tries):
            need = (~found & live(every)).nonzero().flatten()
            if need.numel() == 0:
                break
            cand = rand(g, need.numel(), *x.shape[1:], like=x)
            hit = adversarial(cand, need)
            noise[need[hit]], drawn[need[hit]], found[need[hit]] = cand[hit], True, True
        # blend the noise toward x: binary search on the mixing weight to a tolerance of 0.001
        idx = drawn.nonzero().flatten()
        low = torch.zeros(idx.numel(), device=x.device)
        high = torch.ones(idx.numel(), device=x.device)
        while idx.numel():
            go = ((high - low) > 0.001) & live(idx)
            if not go.any():
                break
            mid = (high[go] + low[go]) / 2
            k = idx[go]
            blend = (1 - _view(mid, x)) * x[k] + _view(mid, x) * noise[k]
            hit = adversarial(blend, k)
            high[go] = torch.where(hit, mid, high[go])
            low[go] = torch.where(hit, low[go], mid)
        if idx.numel():
            adv[idx] = (1 - _view(high, x)) * x[idx] + _view(high, x) * noise[idx]
        return adv, found

    def _project(self, x: torch.Tensor, pert: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        a = _view(alpha, x)
        if self.norm == "l2":
            return (1 - a) * x + a * pert
        return torch.max(torch.min(pert, x + a), x - a)

    def _boundary(self, live: Mask, adversarial: Decide, x: torch.Tensor, pert: torch.Tensor,
                  idx: torch.Tensor, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Binary search from the adversarial ``pert`` toward ``x``; returns the boundary point (adversarial)
        and the distance of ``pert`` (which sets the next ``delta``, as in the paper's code)."""
        d0 = distance(pert - x, self.norm)
        if self.norm == "linf":
            high, thr = d0.clone(), torch.clamp(d0 * theta, max=theta)
        else:
            high, thr = torch.ones_like(d0), torch.full_like(d0, theta)
        low = torch.zeros_like(d0)
        while True:
            go = ((high - low) / thr.clamp_min(1e-30) > 1) & live(idx)
            if not go.any():
                break
            mid = (high[go] + low[go]) / 2
            hit = adversarial(self._project(x[go], pert[go], mid), idx[go])
            high[go] = torch.where(hit, mid, high[go])
            low[go] = torch.where(hit, low[go], mid)
        return self._project(x, pert, high), d0

    def _normal(self, adversarial: Decide, point: torch.Tensor, idx: torch.Tensor, delta: torch.Tensor, evals: int,
                g: torch.Generator) -> torch.Tensor:
        """Monte Carlo estimate of the boundary's normal at ``point`` (unit L2 norm per image)."""
        k = point.shape[0]
        shape = (k, evals, *point.shape[1:])
        rv = randn(g, *shape, like=point) if self.norm == "l2" else rand(g, *shape, like=point) * 2 - 1
        rv = rv / rv.flatten(2).norm(dim=2).clamp_min(1e-12).view(k, evals, *([1] * (point.ndim - 1)))
        dl = delta.view(k, 1, *([1] * (point.ndim - 1)))
        rows = (point[:, None] + dl * rv).clamp(0, 1)
        rv = (rows - point[:, None]) / dl
        hit = adversarial(rows.flatten(0, 1), idx.repeat_interleave(evals)).view(k, evals)
        fval = 2 * hit.to(point.dtype) - 1
        mean = fval.mean(1, keepdim=True)
        centred = torch.where(mean.abs() == 1, torch.ones_like(fval) * mean, fval - mean)
        grad = (centred.view(k, evals, *([1] * (point.ndim - 1))) * rv).mean(1)
        return step_direction(grad, "l2")  # the unit normal

    def _step(self, live: Mask, adversarial: Decide, point: torch.Tensor, update: torch.Tensor,
              size: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Geometric step-size search: ``point + size * update``, halving ``size`` until adversarial. Returns the
        new points and which images found one within their budget."""
        ok = torch.zeros(point.shape[0], dtype=torch.bool, device=point.device)
        out = point.clone()
        size = size.clone()
        while True:
            go = ~ok & live(idx) & (size > 1e-12)
            if not go.any():
                return out, ok
            cand = (point[go] + _view(size[go], point) * update[go]).clamp(0, 1)
            hit = adversarial(cand, idx[go])
            sub = go.nonzero().flatten()
            out[sub[hit]], ok[sub[hit]] = cand[hit], True
            size[sub[~hit]] /= 2
