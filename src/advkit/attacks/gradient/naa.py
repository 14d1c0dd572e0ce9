"""The Neuron Attribution-based Attack as an objective part: ``naa+mi`` (the paper's attack), ``naa+mi+di``, ...

Zhang, Wu, Huang, Huang, Wang, Su, Lyu, "Improving Adversarial Transferability via Neuron Attribution-Based
Attacks", CVPR 2022. Each neuron ``y_j`` of a middle layer is attributed its share of the true class's output ``F``
along the straight path from a baseline ``x'`` (a black image) to the clean image ``x``, approximated as::

    A_j = (y_j - y'_j) * IA_j,   IA_j = (1/N) sum_{m=1..N} dF(x' + m/N (x - x')) / dy_j,

with ``N`` (``naa_steps``, 30) integration steps and ``y'`` the features of the baseline. The *weighted
attribution* with the paper's linear transforms ``f_p(z) = f_n(z) = z`` and ``gamma`` (``naa_gamma``, 1.0) is
``WA = sum_{A_j >= 0} A_j - gamma * sum_{A_j < 0} (-A_j)``, and the attack *minimises* ``WA`` at ``x_adv`` (the
attribution ``(y_j(x_adv) - y'_j) * IA_j`` with ``IA`` fixed); the engine maximises this part's objective, ``-WA``.
The paper optimises with MI-FGSM (decay 1.0, 10 steps): write ``naa+mi``. ``IA`` and ``y'`` are computed once per
call, one path point at a time (``N`` forward and backward passes stopping at the middle layer, plus one forward
pass for the baseline, all counted). ``F`` is the true class's softmax probability, as in the authors' code and in
TransferAttack. At 28 px nothing changes: the path and the baseline do not depend on the image size.

The layer is chosen by structure as ILA's is (:func:`advkit.attacks.gradient.ila.ila_layer`): ``naa_layer="auto"``
is the output of the middle residual / dense block, or the middle convolution / linear layer of a plain network;
a module name picks it by hand.

Differences from released code, as ``naa_variant``:

* ``"code"`` (the authors' TensorFlow ``NAA.py``): Gaussian noise is added to ``x`` before each path point (a fresh
  draw per point, std 0.2 in Inception's ``[-1, 1]`` input space, i.e. 0.1 in ``[0, 1]`` pixels, from the call's
  generator); and ``gamma`` multiplies the *positive* attributions (the code negates the weights before splitting
  positive and negative parts), not the negative ones; both agree at the default ``gamma = 1``.
* ``"transferattack"`` (``advanced_objective/naa.py``): the path points are ``m/N x`` for ``m = 0 .. N-1`` (the
  baseline itself included, ``x`` excluded) and ``gamma`` is absent (always 1; advkit still applies ``naa_gamma``
  as the paper does).

The authors' code also rescales ``IA`` by its L2 norm per image and the loss by the layer's size; neither changes the
MI-FGSM step (its gradient is L1-normalised per image), so advkit keeps the paper's ``1/N``.

Not supported: targeted attacks (the paper defines none; a ``ValueError``) and ensembles of surrogates (a
``ValueError``: attack one member, or use ILA).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from advkit.attacks.core.checks import check_choice, check_number
from advkit.attacks.gradient.fia import middle_layer, refuse, tapped, true_class_score
from advkit.attacks.gradient.parts import Context, Part, register_part

VARIANTS = ("paper", "code", "transferattack")
CODE_NOISE = 0.1
"""The authors' code's noise std (0.2 in ``[-1, 1]`` input space) in ``[0, 1]`` pixel units."""


@register_part
@dataclass(frozen=True)
class NeuronAttribution(Part):
    """NAA (Zhang et al. 2022): minimise the weighted attribution (``naa_gamma`` 1.0) of the middle layer's neurons,
    integrated over ``naa_steps`` (30) points from a black image to the clean one."""

    token: ClassVar[str] = "naa"
    hook: ClassVar[str] = "objective"
    order: ClassVar[int] = 20
    paper: ClassVar[str] = "Zhang et al. 2022"
    aliases: ClassVar[dict[str, str]] = {"N": "naa_steps", "integration_steps": "naa_steps", "gamma_naa": "naa_gamma"}

    naa_layer: str = "auto"
    naa_steps: int = 30
    naa_gamma: float = 1.0
    naa_variant: str = "paper"

    def check(self) -> None:
        if not isinstance(self.naa_layer, str):
            raise ValueError(f"naa_layer must be a module name or 'auto', got {self.naa_layer!r}")
        check_number("naa_steps (integration steps N)", self.naa_steps, lo=1, integer=True)
        check_number("naa_gamma", self.naa_gamma, lo=0.0)
        check_choice("naa_variant", self.naa_variant, VARIANTS)

    def _points(self) -> list[float]:
        n = self.naa_steps
        first = 0 if self.naa_variant == "transferattack" else 1
        return [m / n for m in range(first, first + n)]

    @contextmanager
    def _scope(self, model: nn.Module, ctx: Context) -> Iterator[str]:
        refuse(model, ctx, "NAA")
        name = middle_layer(model, self.naa_layer, "naa_layer", "NAA")
        baseline = torch.zeros_like(ctx.x)  # black, in [0, 1] pixels (the model normalises inside)
        with tapped(model, name) as tap:
            score = true_class_score(ctx.y, "prob")
            total: torch.Tensor | None = None
            for a in self._points():
                x = ctx.x
                if self.naa_variant == "code":
                    noise = torch.randn(ctx.x.shape, generator=ctx.generator, dtype=ctx.x.dtype).to(ctx.x.device)
                    x = x + CODE_NOISE * noise
                g = tap.layer_gradient(ctx, baseline + a * (x - baseline), score)
                total = g if total is None else total + g
            assert total is not None
            with torch.no_grad():
                ctx.model(baseline)
            ctx.state["naa"] = {"tap": tap, "weights": total / self.naa_steps,
                                "base": tap.features().detach().clone()}
            yield name

    def scope(self, model: nn.Module, ctx: Context) -> Any:
        return self._scope(model, ctx)

    def objective(self, logits: torch.Tensor, ctx: Context) -> torch.Tensor:
        state = ctx.state["naa"]
        attribution = (state["tap"].features() - state["base"]) * state["weights"]
        pos, neg = attribution.clamp_min(0), attribution.clamp_max(0)
        wa = pos.sum() + self.naa_gamma * neg.sum()  # paper: sum f_p(A+) - gamma sum f_n(-A-), f linear
        if self.naa_variant == "code":
            wa = self.naa_gamma * pos.sum() + neg.sum()
        return -wa

    def report(self, found: Any, ctx: Context) -> None:
        ctx.info["naa"] = {"layer": found, "steps": self.naa_steps, "gamma": self.naa_gamma,
                           "variant": self.naa_variant}
