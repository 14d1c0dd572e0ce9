"""SVRE: Xiong, Lin, Zhang, Wang, Lin, CVPR 2022, "Stochastic Variance Reduced Ensemble Adversarial Attack for
Boosting the Adversarial Transferability" (Algorithm 1, SVRE-MI-FGSM).

Each outer iteration ``t`` takes the ensemble's loss gradient ``g_ens = grad L_ens(x_t)`` and runs ``M`` inner
steps from ``x~_0 = x_t`` with a fresh inner momentum ``G~_0 = 0``; at inner step ``m`` a member ``k`` is drawn at
random and

    g~_m   = grad L_k(x~_m) - (grad L_k(x_t) - g_ens)           (the variance-reduced gradient)
    G~_m+1 = mu * G~_m + g~_m / ||g~_m||_1
    x~_m+1 = Clip_{x, eps}(x~_m + beta * sign(G~_m+1))

then the outer MI-FGSM step uses the inner accumulated gradient ``G~_M``:

    G_t+1 = mu * G_t + G~_M / ||G~_M||_1,      x_t+1 = Clip_{x, eps}(x_t + alpha * sign(G_t+1)).

Defaults are the paper's (and TransferAttack's ``ensemble/svre.py``): ``eps = 16/255``, ``steps = 10``,
``alpha = eps / steps``, ``M = 4 K`` for ``K`` members, ``beta = alpha``, ``mu = 1``. Members are drawn with
probabilities equal to the ensemble's weights (uniform for equal weights, as in the paper), so ``g~`` estimates the
weighted ensemble's gradient; the draws come from ``generator`` and are one per inner step for the whole batch, as
in the reference code, and are reported in ``info["svre_members"]``. ``grad L_k(x_t)`` is computed once per member
drawn and outer iteration (the reference recomputes it at every inner step; the result is the same). Every point is
projected onto the budget and ``[0, 1]``. ``norm="l2"`` (advkit's extension; the paper is L-inf) replaces ``sign``
by the per-sample L2-normalised direction and the clip by the L2 projection.

Cost per outer iteration: one ensemble pass plus ``M`` to ``2 M`` member passes each way (see
:mod:`advkit.attacks.ensemble.members` for how they are counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from advkit.attacks.core.base import Counter
from advkit.attacks.core.budget import check_eps, project, step_direction
from advkit.attacks.core.registry import register_attack
from advkit.attacks.ensemble.members import EnsembleAttack, MemberAccess, check_steps, l1_sum_normalise

__all__ = ["SVRE"]


@register_attack
@dataclass(frozen=True)
class SVRE(EnsembleAttack):
    """Stochastic variance-reduced ensemble attack (Xiong et al., CVPR 2022), MI-FGSM form.

    Attributes:
        eps: the budget in pixel units of ``[0, 1]`` (paper: 16/255).
        norm: ``"linf"`` (the paper) or ``"l2"``.
        steps: outer iterations ``T`` (paper: 10).
        alpha: outer step size; ``None``: ``eps / steps``.
        inner_steps: inner steps ``M`` per outer iteration; ``None``: ``4 K`` for ``K`` members (paper).
        inner_alpha: inner step size ``beta``; ``None``: the outer step size (paper).
        decay: momentum decay ``mu`` of both the outer and the inner accumulator (paper: 1.0).
        loss: a loss name of :data:`advkit.attacks.core.losses.LOSSES` (``"ce"``, ``"logit"``, ...).
    """

    name: ClassVar[str] = "svre"

    inner_steps: int | None = None
    inner_alpha: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_steps(self.inner_steps, "inner_steps (M, the inner steps per outer iteration)", allow_none=True)
        if self.inner_alpha is not None:
            check_eps(self.inner_alpha, "inner_alpha (beta)")

    @property
    def step_size(self) -> float:
        """The outer step size: ``alpha``, else ``eps / steps``."""
        return self.alpha if self.alpha is not None else self.eps / self.steps

    def config(self) -> dict[str, Any]:
        """The settings, with the outer step size resolved (``inner_steps`` depends on the ensemble)."""
        return {**super().config(), "alpha": self.step_size}

    def _run(self, model: Counter, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
             generator: torch.Generator | None) -> torch.Tensor:
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        access = MemberAccess(model, y, target, self.loss)
        k = access.size
        inner_steps = self.inner_steps if self.inner_steps is not None else 4 * k
        alpha = self.step_size
        beta = self.inner_alpha if self.inner_alpha is not None else alpha
        weights = torch.tensor(access.ensemble.weights, dtype=torch.float64)
        drawn: list[list[int]] = []
        x_adv = x.clone()
        outer = torch.zeros_like(x)
        for _ in range(self.steps):
            g_ens = access.fused(x_adv)
            at_outer: dict[int, torch.Tensor] = {}
            inner_x, inner = x_adv.clone(), torch.zeros_like(x)
            picks = torch.multinomial(weights, inner_steps, replacement=True, generator=g).tolist()
            drawn.append(picks)
            for member in picks:
                if member not in at_outer:
                    at_outer[member] = access.member(member, x_adv)
                reduced = access.member(member, inner_x) - (at_outer[member] - g_ens)
                inner = self.decay * inner + l1_sum_normalise(reduced)
                inner_x = project(inner_x + beta * step_direction(inner, self.norm), x, self.eps, self.norm)
            outer = self.decay * outer + l1_sum_normalise(inner)
            x_adv = project(x_adv + alpha * step_direction(outer, self.norm), x, self.eps, self.norm)
        access.close()
        model.info.update(svre_members=drawn, inner_steps=inner_steps)
        return x_adv.detach()
