"""EOT: Expectation over Transformation for randomised defences, as an input part of the gradient engine.

Athalye, Carlini, Wagner, ICML 2018, "Obfuscated Gradients Give a False Sense of Security: Circumventing Defenses
to Adversarial Examples" (Section 4.3, after Athalye et al. 2018, "Synthesizing Robust Adversarial Examples"): when
the model applies a random transformation ``t ~ T`` to its input, the attack follows
``grad E_t[f(t(x))] = E_t[grad f(t(x))]``, estimated by the mean of the loss gradients of ``eot_samples`` forward
passes, each with a fresh draw of the model's randomness. Default ``eot_samples = 30``, the sample count of the
authors' EOT attack on Xie et al.'s randomisation (``sample_size=30`` in their robustml code).

In the engine the part repeats every copy of the point ``eot_samples`` times (order 30: after Admix / SI / DI, so
each of their copies is repeated too); the engine already runs one forward and one backward pass per copy and
averages the gradients, so each repeat is one fresh pass of the randomised model (its draws come from the model's
own generator, e.g. ``advkit.defences.wrap(model, "random_resize_pad", seed=0)``; the attack's generator is not
used). ``pgd+eot``, ``ifgsm+eot``, ``mi+eot``... On a deterministic model it costs ``eot_samples`` times the
passes and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from advkit.attacks.core.checks import check_number
from advkit.attacks.gradient.parts import Context, CopyFn, Part, register_part


@register_part
@dataclass(frozen=True)
class EOT(Part):
    """EOT (Athalye et al. 2018): average the gradients of ``eot_samples`` (default 30) passes of a randomised
    model at each copy of the point."""

    token: ClassVar[str] = "eot"
    hook: ClassVar[str] = "input"
    order: ClassVar[int] = 30
    paper: ClassVar[str] = "Athalye et al. 2018"
    aliases: ClassVar[dict[str, str]] = {"samples": "eot_samples"}

    eot_samples: int = 30

    def check(self) -> None:
        check_number("eot_samples (EOT's forward passes per gradient)", self.eot_samples, lo=1, integer=True)

    def expand(self, copies: list[CopyFn], point: torch.Tensor, ctx: Context) -> list[CopyFn]:
        return [f for f in copies for _ in range(self.eot_samples)]
