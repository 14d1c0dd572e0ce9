"""GRA: the gradient relevance attack, with its decay indicator.

Zhu, Ren, Sheng, Zhou, Yang, Zhang, Wu, Cao, "Boosting Adversarial Transferability via Gradient Relevance Attack",
ICCV 2023 (Algorithm 1). With ``N`` samples (20), the neighbourhood factor ``beta`` (3.5, in units of eps), the
attenuation factor ``eta`` (0.94), momentum ``mu`` (1) and the step ``alpha = eps / T``, each step::

    g        = grad J(x_t)                                           # the current gradient
    g_avg    = (1 / N) sum_i grad J(x_t + r_i),  r_i ~ U[-beta eps, beta eps]^d
    s        = cos(g, g_avg)                                         # one relevance per image
    g_gra    = s * g + (1 - s) * g_avg                               # the global weighted gradient
    G_{t+1}  = mu * G_t + g_gra / ||g_gra||_1                        # momentum (MI)
    M_{t+1}  = M_t * (1 where sign(G_{t+1}) = sign(G_t), else eta)   # the decay indicator, per pixel
    x_{t+1}  = Clip_{x, eps}(x_t + alpha * M_{t+1} * sign(G_{t+1}))  # and [0, 1]

with ``G_0 = 0`` and ``M_0 = 1 / eta``, so the first step is exactly ``alpha`` (every sign differs from
``sign(0)``) and a pixel's step shrinks by ``eta`` each time its momentum's sign flips.

Which hooks: the relevance is a gradient estimate (``replaces_gradient``: ``1 + N`` gradients a step, none
wasted), and the decay indicator changes the step itself, per pixel, after the momentum, which only a base's step
rule can do (the engine's sign step would erase a factor put in the direction). So GRA is two parts in this file:

* ``gra_relevance`` (gradient hook): ``g_gra`` in place of the loop's gradient;
* ``gra_decay`` (base): the iterate starts at ``x``, ``M`` starts at ``1 / eta``, and each step compares the sign of
  the loop's direction (the momentum ``G_{t+1}`` when ``mi`` is in the name) with the previous direction's.

``gra`` is the macro ``gra_relevance+gra_decay``; momentum is the ``mi`` part, as for every method here, so **the
paper's GRA attack is ``gra+mi``** (``gra+ni`` and ``gra+mi+di`` compose the same way). ``gra_decay`` is a base, so
``gra`` cannot be combined with another base (``pgd``, ``pi``). Under ``norm="l2"`` the indicator scales the unit L2
step per pixel (the paper's algorithm is L-inf).

Differences from TransferAttack's ``gra.py``: none in the arithmetic of a step. Its step size is the ``alpha``
argument, default ``1.6/255`` whatever ``epsilon`` (its PGN uses ``epsilon / epoch``): the paper's ``eps / T`` only
at ``eps = 16/255, T = 10``; at ``eps = 0.1`` and 10 steps its GRA moves at most 0.063 unless ``alpha`` is passed
(advkit's default is the paper's ``eps / T``; ``alpha=`` sets any other). It divides by the product of the two
norms without a guard, so an all-zero gradient gives NaN; advkit clamps the denominator at ``1e-12`` (the relevance
is then 0 and the step uses ``g_avg``). Its ``transform`` of the samples is the identity for GRA. The authors'
TensorFlow code (``RYC-98/GRA``, ``GRA_v3.py``) computes the same step (``M_0 = 10 / 9.4``, MI's mean-absolute
normalisation) but attacks the model's prediction at the first step rather than the true label, which is the same
on the images a transfer study keeps (those classified correctly).
None of the three clips the samples to ``[0, 1]`` (nor does advkit, as for VT's neighbours).

At 28 px: ``beta = 3.5`` is a per-pixel radius in units of eps and means the same at any resolution (at
``eps = 0.1`` the samples reach 0.35 from the iterate, partly outside ``[0, 1]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from advkit.attacks.core.budget import project, step_direction
from advkit.attacks.core.checks import check_number
from advkit.attacks.gradient.parts import Context, Part, register_macro, register_part


def relevance(g: torch.Tensor, g_avg: torch.Tensor) -> torch.Tensor:
    """The cosine similarity of ``g`` and ``g_avg`` per image of ``(N, ...)``, shaped ``(N, 1, ..., 1)``."""
    a, b = g.flatten(1), g_avg.flatten(1)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    return cos.view(-1, *([1] * (g.ndim - 1)))


@register_part
@dataclass(frozen=True)
class GradientRelevance(Part):
    """GRA's gradient (Zhu et al. 2023): ``s * g + (1 - s) * g_avg``, ``g_avg`` over ``gra_samples`` (20) uniform
    samples within ``gra_beta * eps`` (3.5) of the iterate, ``s`` their cosine. Part of ``gra`` (use ``gra+mi``)."""

    token: ClassVar[str] = "gra_relevance"
    hook: ClassVar[str] = "gradient"
    order: ClassVar[int] = 0
    paper: ClassVar[str] = "Zhu et al. 2023"
    replaces_gradient: ClassVar[bool] = True

    gra_samples: int = 20
    gra_beta: float = 3.5

    def check(self) -> None:
        check_number("gra_samples (GRA's number of samples N)", self.gra_samples, lo=1, integer=True)
        check_number("gra_beta (GRA's neighbourhood factor beta in units of eps)", self.gra_beta, lo=0.0)

    def estimate(self, point: torch.Tensor, ctx: Context) -> torch.Tensor:
        base = point.detach()
        g = ctx.gradient(base)
        radius = self.gra_beta * ctx.eps
        total = torch.zeros_like(g)
        for _ in range(self.gra_samples):
            r = (torch.rand(base.shape, generator=ctx.generator, dtype=base.dtype) * 2 - 1).to(base.device)
            total += ctx.gradient(base + radius * r)
        g_avg = total / self.gra_samples
        s = relevance(g, g_avg)
        return s * g + (1 - s) * g_avg


@register_part
@dataclass(frozen=True)
class DecayIndicator(Part):
    """GRA's decay indicator (Zhu et al. 2023), a base: each pixel's step ``alpha * M`` shrinks by ``gra_eta``
    (0.94) whenever the sign of the loop's direction flips there; ``M`` starts at ``1 / gra_eta``. Part of ``gra``."""

    token: ClassVar[str] = "gra_decay"
    hook: ClassVar[str] = "base"
    paper: ClassVar[str] = "Zhu et al. 2023"

    gra_eta: float = 0.94

    def check(self) -> None:
        check_number("gra_eta (GRA's attenuation factor eta)", self.gra_eta, lo=0.0, hi=1.0, lo_open=True)

    def start(self, ctx: Context) -> torch.Tensor:
        ctx.state["gra_indicator"] = torch.full_like(ctx.x, 1.0 / self.gra_eta)
        ctx.state["gra_last_sign"] = torch.zeros_like(ctx.x)
        return ctx.x.clone()

    def step(self, x_adv: torch.Tensor, direction: torch.Tensor, ctx: Context) -> torch.Tensor:
        sign = direction.sign()
        indicator = ctx.state["gra_indicator"]
        indicator = torch.where(sign == ctx.state["gra_last_sign"], indicator, indicator * self.gra_eta)
        ctx.state["gra_indicator"], ctx.state["gra_last_sign"] = indicator, sign
        return project(x_adv + ctx.alpha * indicator * step_direction(direction, ctx.norm), ctx.x, ctx.eps, ctx.norm)


register_macro("gra", ("gra_relevance", "gra_decay"))
