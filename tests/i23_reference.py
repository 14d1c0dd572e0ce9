"""Reference computations shared by the issue-23 tests (written apart from advkit's own code)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _batch(seed: int = 0, n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 12, 12, generator=g) * 0.8 + 0.1, torch.randint(0, 10, (n,), generator=g)


def _grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)[0]


def _l1(g: torch.Tensor) -> torch.Tensor:
    """``g / mean(|g|)`` per sample, as the MI and NI authors' code (``tf.reduce_mean(tf.abs(g))``): the scale
    matters for NI, whose look-ahead point moves by ``alpha * mu * g_t``."""
    return g / g.abs().flatten(1).mean(1).view(-1, 1, 1, 1)


def _linf_step(x0: torch.Tensor, x: torch.Tensor, g: torch.Tensor, alpha: float, eps: float) -> torch.Tensor:
    return torch.min(torch.max(x + alpha * g.sign(), x0 - eps), x0 + eps).clamp(0, 1)


def _l2_step(x0: torch.Tensor, x: torch.Tensor, g: torch.Tensor, alpha: float, eps: float) -> torch.Tensor:
    """Madry et al. 2018, L2: x + alpha g / ||g||_2, then radially back onto the eps ball (only if outside)."""
    nxt = x + alpha * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    d = nxt - x0
    n = d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return (x0 + torch.where(n > eps, d * eps / n, d)).clamp(0, 1)


def _radius_cdf_distance(r: torch.Tensor, eps: float, d: int) -> float:
    """Kolmogorov-Smirnov distance between the radii ``r`` and the uniform-in-the-ball law P(R <= t) = (t/eps)^d."""
    u = (r.double() / eps).clamp(max=1.0) ** d  # uniform on [0, 1] exactly when r is uniform in the ball
    u, _ = u.sort()
    n = u.numel()
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - u, u - (i - 1) / n).max())


class _Flat(nn.Module):
    """A model whose loss does not depend on the input: PGD's step is zero and the result is its random start."""

    num_classes = 10

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 10) + 0.0 * x.flatten(1).sum(1, keepdim=True)
