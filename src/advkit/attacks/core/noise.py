"""The random-noise control: a perturbation of the full budget that uses no gradient and no query.

Transfer above this control is what an attack's gradient adds to the targets' generic fragility to noise of the
same size. ``linf``: every pixel moved by ``+eps`` or ``-eps`` with equal probability (``x + eps * sign(u)``);
``l2``: a uniformly random direction scaled to radius ``eps``. Clipped to ``[0, 1]``; success is measured like any
attack's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from advkit.attacks.core.base import Counter, ModelAttack
from advkit.attacks.core.registry import register_attack


@register_attack
@dataclass(frozen=True)
class Noise(ModelAttack):
    """Random signs (L-inf) or a random direction (L2) of size ``eps``: the control row of a transfer table."""

    name: ClassVar[str] = "noise"
    kind: ClassVar[str] = "control"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got {self.norm!r}")

    def _run(self, model: Counter, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
             generator: torch.Generator | None) -> torch.Tensor:
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        if self.norm == "linf":
            signs = torch.randint(0, 2, x.shape, generator=g).to(device=x.device, dtype=x.dtype) * 2 - 1
            return (x + self.eps * signs).clamp(0.0, 1.0)
        d = torch.randn(x.shape, generator=g).to(device=x.device, dtype=x.dtype)
        d = d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1)))
        return (x + self.eps * d).clamp(0.0, 1.0)
