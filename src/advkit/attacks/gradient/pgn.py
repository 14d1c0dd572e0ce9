"""PGN: penalising the gradient norm to reach flat local maxima.

Ge, Liu, Wang, Shang, Liu, "Boosting Adversarial Transferability by Achieving Flat Local Maxima", NeurIPS 2023
(Algorithm 1). PGN maximises ``J(x) - lambda * ||grad J(x)||_2`` averaged over a neighbourhood; the gradient of the
norm penalty is a Hessian-vector product, which the paper approximates by a finite difference along the normalised
gradient, so each step needs two gradients per sample and no second-order pass. With ``N`` samples (20), the
neighbourhood radius ``zeta`` (3 eps), the balanced coefficient ``delta`` (0.5) and the step ``alpha = eps / T``::

    for i in 1..N:
        x'_i = x_t + r_i,              r_i ~ U[-zeta, zeta]^d            # a sample in the neighbourhood
        g'_i = grad J(x'_i)
        x*_i = x'_i - alpha * g'_i / ||g'_i||_1                          # the predicted (look-back) point
        g*_i = grad J(x*_i)
    g_bar = (1 / N) sum_i [(1 - delta) * g'_i + delta * g*_i]

``g_bar`` replaces the loop's gradient (``replaces_gradient``: the loop takes none at ``x_t`` itself), so one step
costs ``2 N`` forward and backward passes per input copy. The paper's PGN then accumulates ``g_bar`` with MI's
momentum (``mu = 1``) and steps along its sign; in advkit momentum is the ``mi`` part, so **the paper's PGN attack is
``pgn+mi``** (as VMI is ``mi+vt``); ``pgn`` alone is the estimator with plain signed steps, and it composes with the
other parts (``pgn+ni``, ``sgm+pgn+mi``, ``pgn+mi+di``: each gradient through the DI copies).

Normalisation of the look-ahead: the authors' code (``Trustworthy-AI-Group/PGN``) and TransferAttack's ``pgn.py``
divide ``g'`` by its *mean* absolute value per image, ``||g'||_1 / d``, which is how advkit reads every ``||.||_1`` in
this family (MI's and NI's, :func:`~advkit.attacks.gradient.transforms.l1_normalise`): the predicted point moves by
``alpha`` per pixel on average, one I-FGSM step. That is the default (``pgn_lookahead="mean"``). The literal
``||g'||_1`` would shrink the step ``d``-fold and is not offered. ``pgn_lookahead="l2"`` uses the unit L2 direction
``g' / ||g'||_2`` of the finite-difference derivation (the Hessian-vector product along ``v = g / ||g||_2``), which
moves the point by ``alpha`` in L2 norm in all: ``1/28`` of the mean step per pixel at 28 x 28, ``1/388`` at
224 x 224 x 3, so the look-ahead gradient is nearly the sample's own.

Other differences from the released code: none in the arithmetic. Neither the authors nor TransferAttack clip the
samples ``x'`` or the predicted points ``x*`` to ``[0, 1]``, and neither does advkit (the model sees them unclipped, as
VT's neighbours); TransferAttack passes them through ``self.transform``, the identity for PGN. Every draw of ``r_i``
comes from the call's generator, one sample after the other, so the copies are never all in memory at once.

At 28 px: ``zeta = 3 eps`` is a per-pixel radius and means the same at any resolution (at ``eps = 0.1`` the samples
reach 0.3 from the iterate, partly outside ``[0, 1]``); the default ``mean`` look-ahead is likewise per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from advkit.attacks.core.checks import check_choice, check_number
from advkit.attacks.gradient.parts import Context, Part, register_part
from advkit.attacks.gradient.transforms import l1_normalise

LOOKAHEADS = ("mean", "l2")


def unit_l2(grad: torch.Tensor) -> torch.Tensor:
    """``grad / ||grad||_2`` per sample of ``(N, ...)`` (zero gradients stay zero)."""
    norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    return grad / norm.view(-1, *([1] * (grad.ndim - 1)))


@register_part
@dataclass(frozen=True)
class PenalisedGradientNorm(Part):
    """PGN (Ge et al. 2023): the average over ``pgn_samples`` (20) uniform samples within ``pgn_zeta * eps`` (3) of
    ``(1 - pgn_delta) * g' + pgn_delta * g*`` (0.5), ``g*`` taken at the look-ahead ``x' - alpha * g' / mean|g'|``.
    Use with momentum as the paper does: ``pgn+mi``."""

    token: ClassVar[str] = "pgn"
    hook: ClassVar[str] = "gradient"
    order: ClassVar[int] = 0
    paper: ClassVar[str] = "Ge et al. 2023"
    aliases: ClassVar[dict[str, str]] = {"zeta": "pgn_zeta", "delta": "pgn_delta"}
    replaces_gradient: ClassVar[bool] = True

    pgn_samples: int = 20
    pgn_zeta: float = 3.0
    pgn_delta: float = 0.5
    pgn_lookahead: str = "mean"

    def check(self) -> None:
        check_number("pgn_samples (PGN's number of sampled examples N)", self.pgn_samples, lo=1, integer=True)
        check_number("pgn_zeta (PGN's neighbourhood radius zeta in units of eps)", self.pgn_zeta, lo=0.0)
        check_number("pgn_delta (PGN's balanced coefficient delta)", self.pgn_delta, lo=0.0, hi=1.0)
        check_choice("pgn_lookahead (PGN's look-ahead normalisation)", self.pgn_lookahead, LOOKAHEADS)

    def estimate(self, point: torch.Tensor, ctx: Context) -> torch.Tensor:
        radius = self.pgn_zeta * ctx.eps
        unit = l1_normalise if self.pgn_lookahead == "mean" else unit_l2
        base = point.detach()
        total = torch.zeros_like(base)
        for _ in range(self.pgn_samples):
            r = (torch.rand(base.shape, generator=ctx.generator, dtype=base.dtype) * 2 - 1).to(base.device)
            near = base + radius * r
            g_near = ctx.gradient(near)
            g_star = ctx.gradient(near - ctx.alpha * unit(g_near))
            total += (1 - self.pgn_delta) * g_near + self.pgn_delta * g_star
        return total / self.pgn_samples
