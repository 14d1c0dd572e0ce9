"""Metrics: accuracy and attack success with Wilson confidence intervals, and perturbation sizes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from advkit.models.frozen import frozen_eval


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927), from ``scipy.stats.binomtest``.

    Args:
        successes: number of successes ``k``.
        n: number of trials; ``n == 0`` gives ``(0.0, 1.0)``.
        confidence: two-sided level (0.95 -> z = 1.959964).

    Returns:
        ``(low, high)`` in ``[0, 1]``.
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return 0.0, 1.0
    from scipy import stats  # here, not at the top: most commands that import metrics never need an interval

    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence, method="wilson")
    return float(ci.low), float(ci.high)


@dataclass(frozen=True)
class Rate:
    """A proportion with its Wilson interval."""

    k: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else 0.0

    def __str__(self) -> str:
        return f"{100 * self.value:.2f}% [{100 * self.low:.2f}, {100 * self.high:.2f}] ({self.k}/{self.n})"


def rate(mask: torch.Tensor, confidence: float = 0.95) -> Rate:
    """The share of true entries of a bool tensor, with its Wilson interval."""
    k, n = int(mask.sum()), int(mask.numel())
    lo, hi = wilson_interval(k, n, confidence)
    return Rate(k, n, lo, hi)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 500, device: str | None = None) -> torch.Tensor:
    """Top-1 predictions ``(N,)`` of ``model`` on pixels ``x`` ``(N, C, H, W)``, in eval mode, batched."""
    out = []
    with frozen_eval(model):
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size]
            if device is not None:
                xb = xb.to(device)
            out.append(model(xb).argmax(1).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def distortion(x_adv: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample L-inf, L2 and L0 (share of features changed by more than 1e-6) distances, each ``(N,)``."""
    d = (x_adv - x).flatten(1)
    return {"linf": d.abs().amax(1), "l2": d.norm(dim=1), "l0": (d.abs() > 1e-6).float().mean(1)}
