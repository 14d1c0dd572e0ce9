"""SimBA (Guo, Gardner, You, Wilson & Weinberger, ICML 2019): simple black-box attack over an orthonormal basis.

Score-based. Directions ``q`` are taken from an orthonormal basis in random order without replacement; for each,
try ``x - step q`` and keep it if the attacked class's probability drops (untargeted: the label's; targeted: the
target's rises), else try ``x + step q``. One or two queries per direction; the first query checks the start.

- ``basis="pixel"``: the standard basis (SimBA).
- ``basis="dct"``: the 2D DCT basis per channel, low frequencies first (SimBA-DCT): the lowest ``1/8`` of the
  frequencies in each direction in random order, then bands ``size/32`` wide, each in random order.

The paper's step is ``0.2`` in pixel units. SimBA is an L2 attack (every accepted step adds ``step`` to the
perturbation's length in quadrature); here ``eps`` bounds that L2 norm (candidates outside the ball are
projected onto it), or, with ``norm="linf"``, the L-inf norm (then ``step`` defaults to ``eps``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import torch

from advkit.attacks.core.budget import project
from advkit.attacks.core.checks import check_number
from advkit.attacks.core.registry import register_attack
from advkit.attacks.query.base import QueryAttack
from advkit.attacks.query.oracle import QuerySession

__all__ = ["SimBA", "dct_matrix", "low_frequency_order"]


@lru_cache(maxsize=8)
def dct_matrix(size: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``D`` (``size x size``, float64): ``D @ v`` is the DCT of ``v``, ``D.T``
    inverts it."""
    k = torch.arange(size, dtype=torch.float64)[:, None]
    i = torch.arange(size, dtype=torch.float64)[None]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * size)) * math.sqrt(2 / size)
    d[0] /= math.sqrt(2)
    return d


def low_frequency_order(c: int, h: int, w: int, g: torch.Generator, initial: int | None = None,
                        stride: int | None = None) -> torch.Tensor:
    """A permutation of the ``c * h * w`` DCT coefficients: the ``initial x initial`` lowest frequencies of every
    channel first (``h / 8`` by default), then bands ``stride`` wide (``h / 32``), each band in random order."""
    initial = initial if initial is not None else max(1, math.ceil(h / 8))
    stride = stride if stride is not None else max(1, h // 32)
    u = torch.arange(h)[:, None].expand(h, w)
    v = torch.arange(w)[None].expand(h, w)
    reach = torch.maximum(u, v)
    band = torch.where(reach < initial, torch.zeros_like(reach), 1 + (reach - initial) // stride)
    band = band[None].expand(c, h, w).flatten()
    key = band.double() + torch.rand(band.numel(), generator=g, dtype=torch.float64)  # random within a band
    return key.argsort()


@register_attack
@dataclass(frozen=True)
class SimBA(QueryAttack):
    """SimBA (Guo et al. 2019) over the pixel or the low-frequency DCT basis, score-based."""

    name: ClassVar[str] = "simba"

    eps: float = 2.0
    norm: str = "l2"
    basis: str = "dct"
    step: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.basis not in ("pixel", "dct"):
            raise ValueError(f"basis must be 'pixel' (SimBA) or 'dct' (SimBA-DCT), got {self.basis!r}")
        if self.step is not None:
            check_number("step", self.step, lo=0, lo_open=True)

    @property
    def step_size(self) -> float:
        """``step``, or the paper's 0.2 (L2); ``eps`` under an L-inf budget."""
        if self.step is not None:
            return float(self.step)
        return 0.2 if self.norm == "l2" else self.eps

    def _direction(self, coords: torch.Tensor, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """The basis vectors of the flat coordinates ``coords`` (one per image), shaped ``(k, c, h, w)``."""
        k = coords.numel()
        c, h, w = shape
        if self.basis == "pixel":
            q = like.new_zeros(k, c * h * w)
            q[torch.arange(k, device=like.device), coords] = 1.0
            return q.view(k, c, h, w)
        ch, rem = coords // (h * w), coords % (h * w)
        row, col = rem // w, rem % w
        dh, dw = dct_matrix(h).to(like), dct_matrix(w).to(like)
        spatial = dh[row][:, :, None] * dw[col][:, None, :]                         # outer product, unit norm
        q = like.new_zeros(k, c, h, w)
        q[torch.arange(k, device=like.device), ch] = spatial
        return q

    def _search(self, oracle: QuerySession, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                g: torch.Generator, start: torch.Tensor | None) -> torch.Tensor:
        n = x.shape[0]
        cur = (start if start is not None else x).clone()
        if n == 0:
            return cur
        shape = tuple(x.shape[1:])
        dims = math.prod(shape)
        if self.basis == "pixel":
            order = torch.stack([torch.randperm(dims, generator=g) for _ in range(n)]).to(x.device)
        else:
            order = torch.stack([low_frequency_order(shape[0], shape[1], shape[2], g) for _ in range(n)]).to(x.device)
        cls = y if target is None else target
        sign = 1.0 if target is None else -1.0                # minimise p_y, or maximise p_t

        def attacked(logp: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            prob = sign * logp.gather(1, cls[idx][:, None]).squeeze(1)
            pred = logp.argmax(1)
            won = pred != y[idx] if target is None else pred == target[idx]
            return prob, won

        every = torch.arange(n, device=x.device)
        best, done = attacked(oracle.scores(cur, every), every)
        pos = torch.zeros(n, dtype=torch.long, device=x.device)          # next direction of each image
        while True:
            active = (~done & (pos < dims) & (oracle.remaining() >= 1)).nonzero().flatten()
            if active.numel() == 0:
                return cur
            q = self._direction(order[active, pos[active]], shape, x) * self.step_size
            pos[active] += 1
            # first try minus the direction
            minus = project(cur[active] - q, x[active], self.eps, self.norm)
            val, won = attacked(oracle.scores(minus, active), active)
            ok = val < best[active]
            take = active[ok]
            cur[take], best[take], done[take] = minus[ok], val[ok], won[ok]
            # then plus, for those where minus did not lower the loss and a query is left
            left = ~ok & (oracle.remaining()[active] >= 1)
            if left.any():
                idx = active[left]
                plus = project(cur[idx] + q[left], x[idx], self.eps, self.norm)
                val, won = attacked(oracle.scores(plus, idx), idx)
                ok2 = val < best[idx]
                take = idx[ok2]
                cur[take], best[take], done[take] = plus[ok2], val[ok2], won[ok2]
