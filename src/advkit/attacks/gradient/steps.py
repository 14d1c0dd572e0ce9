"""Step rules and the base parts: where the loop starts and how far each step goes.

A step rule turns the loop's direction into a step and projects back onto the budget: ``linf`` takes
``alpha * sign(g)`` (Goodfellow et al. 2015; Kurakin et al. 2017) and clips to the L-inf ball, ``l2`` takes
``alpha * g / ||g||_2`` and projects radially onto the L2 ball (Madry et al. 2018). The bases:

* ``fgsm`` (Goodfellow et al. 2015): one step of size ``eps``;
* ``ifgsm`` / ``bim`` (Kurakin et al. 2017): start at ``x``, ``steps`` steps of ``eps / steps`` (the default);
* ``pgd`` (Madry et al. 2018): start uniformly at random in the ball, steps of ``2.5 * eps / steps``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from advkit.attacks.core.budget import project, step_direction
from advkit.attacks.gradient.parts import Context, Part, register_macro, register_part
from advkit.attacks.gradient.transforms import random_start


@dataclass(frozen=True)
class StepRule:
    """How a direction becomes a step, and the projection onto the budget, for one norm."""

    norm: str

    def step(self, x_adv: torch.Tensor, direction: torch.Tensor, alpha: float, x: torch.Tensor,
             eps: float) -> torch.Tensor:
        """``project(x_adv + alpha * unit(direction))`` onto the ``eps`` ball around ``x`` and ``[0, 1]``."""
        return project(x_adv + alpha * step_direction(direction, self.norm), x, eps, self.norm)


STEP_RULES: dict[str, StepRule] = {"linf": StepRule("linf"), "l2": StepRule("l2")}


@register_part
@dataclass(frozen=True)
class FGSM(Part):
    """Goodfellow, Shlens, Szegedy, ICLR 2015: ``x' = x + eps * sign(grad_x J)``, one step of size eps."""

    token: ClassVar[str] = "fgsm"
    hook: ClassVar[str] = "base"
    paper: ClassVar[str] = "Goodfellow et al. 2015"
    sets: ClassVar[dict[str, object]] = {"steps": 1}


@register_part
@dataclass(frozen=True)
class IFGSM(Part):
    """Kurakin, Goodfellow, Bengio, ICLR 2017 (I-FGSM / BIM): start at ``x``, ``steps`` signed steps of
    ``eps / steps`` each clipped to the ball. The default base when a name has none."""

    token: ClassVar[str] = "ifgsm"
    hook: ClassVar[str] = "base"
    paper: ClassVar[str] = "Kurakin et al. 2017"


register_macro("bim", ("ifgsm",))


@register_part
@dataclass(frozen=True)
class PGD(Part):
    """Madry et al., ICLR 2018: a uniform random start in the ball (``random_init``), steps of
    ``2.5 * eps / steps`` by default."""

    token: ClassVar[str] = "pgd"
    hook: ClassVar[str] = "base"
    paper: ClassVar[str] = "Madry et al. 2018"
    aliases: ClassVar[dict[str, str]] = {"random_start": "random_init"}

    random_init: bool = True

    def check(self) -> None:
        if not isinstance(self.random_init, bool):
            raise ValueError(f"random_init must be true or false, got {self.random_init!r}")

    def start(self, ctx: Context) -> torch.Tensor:
        return random_start(ctx.x, ctx.eps, ctx.norm, ctx.generator) if self.random_init else ctx.x.clone()

    def alpha_factor(self) -> float:
        return 2.5 if self.random_init else 1.0
