"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020): random search over square updates.

Score-based, L-inf and L2. Each iteration proposes one random square of side ``s`` per image and keeps it when it
lowers the loss: the margin loss ``z_y - max_{j != y} z_j`` untargeted, the target's cross-entropy targeted (the
paper's choices). The fraction of pixels a square covers starts at ``p_init`` and is halved on the paper's
schedule (iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10,000, rescaled to the query budget).

- L-inf: initialised with vertical stripes of ``+-eps``; each update sets a window to ``+-eps`` per channel,
  drawn again while it would leave the image unchanged.
- L2: initialised with a grid of pseudo-Gaussian bumps of norm ``eps``; each update moves the mass of a second
  window into the first, as a pair of opposite bumps, so the perturbation keeps norm ``eps``.

The first query is the initialisation (or ``start=``); each later one is one proposal. The paper's ImageNet
defaults are ``p_init = 0.05`` (L-inf) and ``0.1`` (L2); it used ``p_init = 0.8`` on MNIST.
Windows are drawn per image (the reference code shares the L2 window across a batch: the same algorithm, but
the images of a batch are then not independent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from advkit.attacks.core.checks import check_number
from advkit.attacks.core.registry import register_attack
from advkit.attacks.query.base import QueryAttack, margin, objective, randint, signs
from advkit.attacks.query.oracle import QuerySession

__all__ = ["Square", "p_schedule", "pseudo_gaussian_square"]

# (iteration on a 10,000-iteration scale, divisor of p_init from that iteration on), from the paper.
_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
             (8000, 256), (10000, 512))


def p_schedule(p_init: float, it: int, n_iters: int) -> float:
    """The fraction of pixels a square covers at iteration ``it`` of ``n_iters``: ``p_init`` halved at the
    paper's iterations (rescaled from 10,000 to ``n_iters``)."""
    t = int(it / n_iters * 10000)
    for upto, div in _SCHEDULE:
        if t <= upto:
            return p_init / div
    return p_init  # past the schedule's end (as in the reference code)


def _bumps(rows: int, cols: int) -> torch.Tensor:
    """A ``rows x cols`` pseudo-Gaussian bump: nested centred rectangles weighted ``1 / (k + 1)^2``, unit norm."""
    out = torch.zeros(rows, cols, dtype=torch.float64)
    r, c = rows // 2, cols // 2
    for k in range(max(rows // 2 + 1, cols // 2 + 1)):
        out[max(r - k, 0):min(r + k + 1, rows), max(c - k, 0):min(c + k + 1, cols)] += 1.0 / (k + 1) ** 2
    return out / out.norm()


def pseudo_gaussian_square(s: int) -> torch.Tensor:
    """The L2 update of side ``s``: a bump on the top half and its negative on the bottom half, unit norm."""
    out = torch.zeros(s, s, dtype=torch.float64)
    out[: s // 2] = _bumps(s // 2, s)
    out[s // 2:] = -_bumps(s - s // 2, s)
    return out / out.norm()


def _window_mask(top: torch.Tensor, left: torch.Tensor, s: int, h: int, w: int) -> torch.Tensor:
    """Bool ``(n, 1, h, w)``: the ``s x s`` window at ``(top, left)`` of each image."""
    rows = torch.arange(h, device=top.device)
    cols = torch.arange(w, device=top.device)
    in_r = (rows[None] >= top[:, None]) & (rows[None] < top[:, None] + s)
    in_c = (cols[None] >= left[:, None]) & (cols[None] < left[:, None] + s)
    return (in_r[:, :, None] & in_c[:, None, :])[:, None]


def _place(pattern: torch.Tensor, top: torch.Tensor, left: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Put each image's ``(c, s, s)`` pattern at its window in a zero ``(n, c, h, w)`` canvas."""
    n, c, s, _ = pattern.shape
    canvas = pattern.new_zeros(n, c, h, w)
    ar = torch.arange(s, device=top.device)
    rr = (top[:, None] + ar)[:, :, None]
    cc = (left[:, None] + ar)[:, None, :]
    canvas[torch.arange(n, device=top.device)[:, None, None], :, rr, cc] = pattern.permute(0, 2, 3, 1)
    return canvas


def _flip(pattern: torch.Tensor, g: torch.Generator, n: int) -> torch.Tensor:
    """``(n, 1, s, s)``: the pattern, transposed for a random half of the images (the paper's random rotation)."""
    t = torch.rand(n, generator=g) > 0.5
    both = torch.stack([pattern, pattern.T])
    return both[t.long()][:, None]


@register_attack
@dataclass(frozen=True)
class Square(QueryAttack):
    """Square Attack (Andriushchenko et al. 2020), L-inf or L2, score-based."""

    name: ClassVar[str] = "square"

    eps: float = 0.05
    p_init: float | None = None
    loss: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.p_init is not None:
            check_number("p_init", self.p_init, lo=0, hi=1, lo_open=True)
        if self.loss is not None and self.loss not in ("margin", "ce"):
            raise ValueError(f"loss must be 'margin' or 'ce', got {self.loss!r}")

    @property
    def p(self) -> float:
        """``p_init``, or the paper's default for the norm (0.05 L-inf, 0.1 L2)."""
        return float(self.p_init) if self.p_init is not None else (0.05 if self.norm == "linf" else 0.1)

    def _search(self, oracle: QuerySession, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                g: torch.Generator, start: torch.Tensor | None) -> torch.Tensor:
        n, c, h, w = x.shape
        loss = self.loss or ("margin" if target is None else "ce")
        if start is not None:
            best = start.clone()
        elif self.norm == "linf":
            best = (x + self.eps * signs(g, n, c, 1, w, like=x)).clamp(0, 1)
        else:
            best = (x + self._l2_init(x, g)).clamp(0, 1)
        if n == 0:
            return best
        every = torch.arange(n, device=x.device)
        logp = oracle.scores(best, every)
        loss_best = objective(logp, y, target, loss)
        margin_best = margin(logp, y, target)
        for it in range(self.max_queries - 1):
            active = ((margin_best >= 0) & (oracle.remaining() > 0)).nonzero().flatten()
            if active.numel() == 0:
                break
            p = p_schedule(self.p, it, self.max_queries)
            xa, ba = x[active], best[active]
            tgt = None if target is None else target[active]
            if self.norm == "linf":
                cand = self._linf_step(xa, ba, p, g)
            else:
                cand = self._l2_step(xa, ba, p, g)
            logp = oracle.scores(cand, active)
            loss_new = objective(logp, y[active], tgt, loss)
            better = loss_new < loss_best[active]
            idx = active[better]
            best[idx] = cand[better]
            loss_best[idx] = loss_new[better]
            margin_best[idx] = margin(logp[better], y[idx], None if target is None else target[idx])
        return best

    def _side(self, p: float, h: int, w: int) -> int:
        """The side of a square covering the fraction ``p`` of an image's pixels."""
        return int(round(math.sqrt(p * h * w)))

    def _linf_step(self, x: torch.Tensor, best: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        s = min(max(self._side(p, h, w), 1), h - 1)
        top = randint(g, h - s, n, x.device)
        left = randint(g, w - s, n, x.device)
        win = _window_mask(top, left, s, h, w)
        delta = best - x
        cand = best.clone()
        todo = torch.ones(n, dtype=torch.bool, device=x.device)
        while todo.any():
            k = int(todo.sum())
            new = torch.where(win[todo], self.eps * signs(g, k, c, 1, 1, like=x), delta[todo])
            trial = (x[todo] + new).clamp(0, 1)
            cand[todo] = trial
            same = ((trial - best[todo]).abs() < 1e-7).logical_or(~win[todo]).flatten(1).all(1)
            todo[todo.clone()] = same
        return cand

    def _l2_init(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        s = max(h // 5, 1)
        off = (h - s * 5) // 2
        delta = x.new_zeros(n, c, h, w)
        bump = pseudo_gaussian_square(s).to(x)
        for i in range(h // s):
            for j in range(w // s):
                r, q = off + i * s, off + j * s
                if r + s > h or q + s > w:
                    continue
                delta[:, :, r:r + s, q:q + s] += _flip(bump, g, n) * signs(g, n, c, 1, 1, like=x)
        return delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(n, 1, 1, 1) * self.eps

    def _l2_step(self, x: torch.Tensor, best: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        s = max(self._side(p, h, w), 3)
        if s % 2 == 0:
            s += 1
        s = min(s, h - 1)
        top1, left1 = randint(g, h - s, n, x.device), randint(g, w - s, n, x.device)
        top2, left2 = randint(g, h - s, n, x.device), randint(g, w - s, n, x.device)
        win1, win2 = _window_mask(top1, left1, s, h, w), _window_mask(top2, left2, s, h, w)
        delta = best - x
        norm_win1 = (delta * win1).square().sum((2, 3), keepdim=True).sqrt()        # (n, c, 1, 1)
        norm_img = delta.flatten(1).norm(dim=1).view(n, 1, 1, 1)
        norm_both = (delta * (win1 | win2)).square().sum((2, 3), keepdim=True).sqrt()
        ar = torch.arange(s, device=x.device)
        rr, cc = (top1[:, None] + ar)[:, :, None], (left1[:, None] + ar)[:, None, :]
        old = delta[torch.arange(n, device=x.device)[:, None, None], :, rr, cc].permute(0, 3, 1, 2)
        new = _flip(pseudo_gaussian_square(s).to(x), g, n) * signs(g, n, c, 1, 1, like=x)
        new = new + old / (1e-10 + norm_win1)
        room = ((self.eps ** 2 - norm_img ** 2).clamp_min(0) / c + norm_both ** 2).sqrt()
        new = new / new.square().sum((2, 3), keepdim=True).sqrt().clamp_min(1e-12) * room
        delta = torch.where(win2, torch.zeros_like(delta), delta)
        delta = torch.where(win1, _place(new, top1, left1, h, w), delta)
        delta = delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(n, 1, 1, 1) * self.eps
        return (x + delta).clamp(0, 1)
