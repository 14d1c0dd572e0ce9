"""NES gradient estimation with projected sign steps (Ilyas, Engstrom, Athalye & Lin, ICML 2018, Algorithms 1-2).

Score-based. Each iteration estimates the loss gradient from ``samples`` queries around the current point with
antithetic Gaussian directions, ``g = 1 / (samples * sigma) * sum_i [L(x + sigma u_i) - L(x - sigma u_i)] u_i``
over ``samples / 2`` pairs, and takes a projected step ``x <- Proj(x + alpha * sign(g))`` (L-inf) or along
``g / ||g||`` (L2). One more query per iteration checks the new point, so the attack stops on each image as soon
as it succeeds. The paper's settings: ``sigma = 0.001``, 50 samples per estimate, step ``alpha = 0.01`` for
``eps = 0.05``. The loss ascended is the cross-entropy (untargeted: of the label; targeted: toward the target).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from advkit.attacks.core.budget import project, step_direction
from advkit.attacks.core.checks import check_number
from advkit.attacks.core.registry import register_attack
from advkit.attacks.query.base import QueryAttack, margin, objective, randn
from advkit.attacks.query.oracle import QuerySession

__all__ = ["NES"]


@register_attack
@dataclass(frozen=True)
class NES(QueryAttack):
    """NES gradient estimates with PGD steps (Ilyas et al. 2018), L-inf or L2, score-based."""

    name: ClassVar[str] = "nes"

    eps: float = 0.05
    sigma: float = 0.001
    samples: int = 50
    alpha: float | None = None
    loss: str = "ce"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("sigma", self.sigma, lo=0, lo_open=True)
        check_number("samples", self.samples, lo=2, integer=True)
        if self.samples % 2:
            raise ValueError(f"samples (queries per gradient estimate, in antithetic pairs) must be even, got "
                             f"{self.samples!r}")
        if self.samples + 2 > self.max_queries:
            raise ValueError(f"max_queries={self.max_queries} cannot pay for one NES iteration (1 + {self.samples} "
                             f"samples + 1 check); raise max_queries or lower samples")
        if self.alpha is not None:
            check_number("alpha", self.alpha, lo=0, lo_open=True)
        if self.loss not in ("ce", "margin"):
            raise ValueError(f"loss must be 'ce' or 'margin', got {self.loss!r}")

    @property
    def step(self) -> float:
        """The step size: ``alpha``, or the paper's ratio ``eps / 5`` (0.01 for ``eps = 0.05``)."""
        return float(self.alpha) if self.alpha is not None else self.eps / 5

    def _search(self, oracle: QuerySession, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                g: torch.Generator, start: torch.Tensor | None) -> torch.Tensor:
        n = x.shape[0]
        cur = (start if start is not None else x).clone()
        if n == 0:
            return cur
        every = torch.arange(n, device=x.device)
        done = margin(oracle.scores(cur, every), y, target) < 0
        half = self.samples // 2
        while True:
            active = (~done & (oracle.remaining() >= self.samples + 1)).nonzero().flatten()
            if active.numel() == 0:
                return cur
            k = active.numel()
            xa = cur[active]
            u = randn(g, k, half, *x.shape[1:], like=x)
            u = torch.cat([u, -u], dim=1)                                        # antithetic pairs
            rows = (xa[:, None] + self.sigma * u).clamp(0, 1).flatten(0, 1)
            owner = active.repeat_interleave(self.samples)
            yy = y[active].repeat_interleave(self.samples)
            tt = None if target is None else target[active].repeat_interleave(self.samples)
            # the loss is minimised, so the estimate of its gradient is subtracted
            loss = objective(oracle.scores(rows, owner), yy, tt, self.loss).view(k, self.samples)
            grad = (loss.view(k, self.samples, *([1] * (x.ndim - 1))) * u).sum(1) / (self.samples * self.sigma)
            new = project(xa - self.step * step_direction(grad, self.norm), x[active], self.eps, self.norm)
            cur[active] = new
            done[active] = margin(oracle.scores(new, active), y[active],
                                  None if target is None else target[active]) < 0
