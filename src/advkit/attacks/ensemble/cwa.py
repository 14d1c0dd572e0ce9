"""CWA: Chen, Zhang, Dong, Yang, Su, Zhu, ICLR 2024, "Rethinking Model Ensemble in Transfer-based Adversarial
Attacks" (Algorithm 1, MI-CWA: the Common Weakness Attack with momentum).

Two parts per outer iteration ``t`` at ``x_t``: a sharpness-aware step toward flat optima (SAM), then a
cosine-similarity encouraging inner loop over the ``K`` members (closeness of the members' optima):

    g       = grad L_ens(x_t)
    x^0     = Clip_{x, eps}(x_t - r * sign(g))                 (the reverse step of size r)
    for i = 1..K (every member once, in order):
        g_i = grad L_i(x^{i-1}),   m = mu * m + g_i / ||g_i||_2,   x^i = Clip_{x, eps}(x^{i-1} + beta * m)
    d       = x^K - x_t
    M       = mu * M + d / ||d||_1,        x_t+1 = Clip_{x, eps}(x_t + alpha * sign(M)).

The inner momentum ``m`` and the outer ``M`` start at zero and carry over the outer iterations (as in
TransferAttack's ``ensemble/cwa.py`` and the authors' ``CommonWeakness`` classes). Defaults are the authors' (also
TransferAttack's): ``eps = 16/255``, ``steps = 10``, ``alpha = 2 eps/steps`` (their ``16/255/5``), ``r = eps/15``
(their ``16/255/15``), ``beta = 250``, ``mu = 1``. ``beta`` multiplies L2-normalised gradients, so at this size the
inner steps mostly saturate at the budget. One departure from TransferAttack, where the outer accumulator divides
``d`` by its L1 norm over the whole batch: advkit divides per sample (the paper's ``||d||_1``), so one image's
result does not depend on the others in its batch. The inner loop gives every member the same part, so the
ensemble's weights enter only the reverse step through the fused gradient; unequal weights are refused. Every point
is projected onto the budget and ``[0, 1]``. ``norm="l2"`` (advkit's extension; the paper is L-inf) replaces
``sign`` by the per-sample L2-normalised direction and the clip by the L2 projection.

Cost per outer iteration: one ensemble pass and ``K`` member passes (one ensemble-equivalent) each way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from advkit.attacks.core.base import Counter
from advkit.attacks.core.budget import check_eps, project, step_direction
from advkit.attacks.core.registry import register_attack
from advkit.attacks.ensemble.members import EnsembleAttack, MemberAccess, check_ensemble, l1_sum_normalise

__all__ = ["CWA"]


def _l2_normalise(g: torch.Tensor) -> torch.Tensor:
    return g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (g.ndim - 1)))


@register_attack
@dataclass(frozen=True)
class CWA(EnsembleAttack):
    """Common Weakness Attack (Chen et al., ICLR 2024), MI-CWA.

    Attributes:
        eps: the budget in pixel units of ``[0, 1]`` (paper: 16/255).
        norm: ``"linf"`` (the paper) or ``"l2"``.
        steps: outer iterations ``T`` (paper: 10).
        alpha: outer step size; ``None``: ``2 * eps / steps`` (the authors' 16/255/5 at their eps and steps).
        reverse_alpha: the reverse (sharpness-aware) step size ``r``; ``None``: ``eps / 15``.
        inner_alpha: the inner step size ``beta`` on L2-normalised gradients (authors: 250).
        decay: momentum decay ``mu`` of both accumulators (paper: 1.0).
        loss: a loss name of :data:`advkit.attacks.core.losses.LOSSES` (``"ce"``, ``"logit"``, ...).
    """

    name: ClassVar[str] = "cwa"

    reverse_alpha: float | None = None
    inner_alpha: float = 250.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reverse_alpha is not None:
            check_eps(self.reverse_alpha, "reverse_alpha (r)")
        check_eps(self.inner_alpha, "inner_alpha (beta)")

    @property
    def step_size(self) -> float:
        """The outer step size: ``alpha``, else ``2 * eps / steps``."""
        return self.alpha if self.alpha is not None else 2 * self.eps / self.steps

    @property
    def reverse_size(self) -> float:
        """The reverse step size: ``reverse_alpha``, else ``eps / 15``."""
        return self.reverse_alpha if self.reverse_alpha is not None else self.eps / 15

    def config(self) -> dict[str, Any]:
        """The settings, with the step sizes resolved."""
        return {**super().config(), "alpha": self.step_size, "reverse_alpha": self.reverse_size}

    def _open(self, model: nn.Module, x: torch.Tensor) -> Counter:
        counter = super()._open(model, x)
        ens = check_ensemble(model, self.name)
        if max(ens.weights) - min(ens.weights) > 1e-12:
            raise ValueError(f"cwa gives every member the same inner step (Chen et al. 2024), so member weights "
                             f"have no meaning; build the ensemble with equal weights (got {ens.weights})")
        return counter

    def _run(self, model: Counter, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
             generator: torch.Generator | None) -> torch.Tensor:
        access = MemberAccess(model, y, target, self.loss)
        alpha, r = self.step_size, self.reverse_size
        x_adv = x.clone()
        inner, outer = torch.zeros_like(x), torch.zeros_like(x)
        for _ in range(self.steps):
            point = project(x_adv - r * step_direction(access.fused(x_adv), self.norm), x, self.eps, self.norm)
            for k in range(access.size):
                inner = self.decay * inner + _l2_normalise(access.member(k, point))
                point = project(point + self.inner_alpha * inner, x, self.eps, self.norm)
            outer = self.decay * outer + l1_sum_normalise(point - x_adv)
            x_adv = project(x_adv + alpha * step_direction(outer, self.norm), x, self.eps, self.norm)
        access.close()
        return x_adv.detach()
