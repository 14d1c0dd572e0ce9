"""Update rules: momentum (MI-FGSM) and its Nesterov look-ahead (NI-FGSM).

* ``mi``: Dong et al., "Boosting Adversarial Attacks with Momentum", CVPR 2018:
  ``g_{t+1} = mu * g_t + grad / ||grad||_1``, step along ``sign(g_{t+1})`` (the sign after the accumulation).
* ``ni``: Lin et al., "Nesterov Accelerated Gradient and Scale Invariance for Adversarial Attacks", ICLR 2020:
  the gradient is taken at the look-ahead point ``x_t + alpha * mu * g_t``, then accumulated as in MI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from advkit.attacks.core.checks import check_number
from advkit.attacks.gradient.parts import Context, Part, register_part
from advkit.attacks.gradient.transforms import l1_normalise


@register_part
@dataclass(frozen=True)
class Momentum(Part):
    """MI-FGSM (Dong et al. 2018): accumulate the L1-normalised gradient with decay ``mu`` (default 1.0)."""

    token: ClassVar[str] = "mi"
    hook: ClassVar[str] = "update"
    order: ClassVar[int] = 10
    paper: ClassVar[str] = "Dong et al. 2018"
    aliases: ClassVar[dict[str, str]] = {"momentum": "decay", "mu": "decay"}
    excludes: ClassVar[dict[str, str]] = {"ni": "NI-FGSM already accumulates momentum; use 'ni' alone"}

    decay: float = 1.0

    def check(self) -> None:
        check_number("momentum decay (decay)", self.decay, lo=0.0)

    def update(self, grad: torch.Tensor, ctx: Context) -> torch.Tensor:
        m = ctx.state.get("momentum")
        m = l1_normalise(grad) if m is None else self.decay * m + l1_normalise(grad)
        ctx.state["momentum"] = m
        return m


@register_part
@dataclass(frozen=True)
class Nesterov(Momentum):
    """NI-FGSM (Lin et al. 2020): MI's accumulation with the gradient taken at ``x_t + alpha * mu * g_t``."""

    token: ClassVar[str] = "ni"
    paper: ClassVar[str] = "Lin et al. 2020"
    excludes: ClassVar[dict[str, str]] = {"mi": "NI-FGSM already accumulates momentum; use 'ni' alone"}

    def lookahead(self, point: torch.Tensor, ctx: Context) -> torch.Tensor:
        m = ctx.state.get("momentum")
        return point if m is None else point + ctx.alpha * self.decay * m
