"""What the ensemble methods share: the model check, fused and per-member gradients, and how passes are counted.

Counting: the :class:`~advkit.attacks.core.base.Counter` counts batched passes through the whole model, so a pass
through one of the ensemble's ``K`` members is ``1/K`` of one. :class:`MemberAccess` counts member passes exactly
(``info["member_forward_passes"]``, ``info["member_backward_passes"]``) and, when the attack ends, adds their
ensemble-equivalent ``ceil(member passes / K)`` to the counter's ``forward`` / ``backward``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from advkit.attacks.core.base import Counter, ModelAttack, attack_loss
from advkit.attacks.core.budget import check_eps
from advkit.attacks.core.losses import check_loss
from advkit.models.ensemble import Ensemble

__all__ = ["EnsembleAttack", "MemberAccess", "check_ensemble", "check_steps", "l1_sum_normalise"]


def check_steps(value: object, name: str, allow_none: bool = False) -> None:
    """``ValueError`` unless ``value`` is an integer >= 1 (or ``None`` when allowed)."""
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def check_ensemble(model: nn.Module, name: str) -> Ensemble:
    """``model`` as an :class:`Ensemble`; ``ValueError`` naming the fix for any other model."""
    if not isinstance(model, Ensemble):
        raise ValueError(f"{name} needs an ensemble of surrogates: advkit.models.ensemble([...]) or a model named "
                         f"ensemble:A+B (got {getattr(model, 'name', None) or type(model).__name__})")
    return model


@dataclass(frozen=True)
class EnsembleAttack(ModelAttack):
    """What the ensemble methods share: an outer MI-FGSM loop's settings (``eps``, ``steps``, ``alpha``, ``decay``),
    the loss, their checks, and the refusal of any model that is not an :class:`Ensemble`."""

    kind: ClassVar[str] = "gradient"

    eps: float = 16 / 255
    steps: int = 10
    alpha: float | None = None
    decay: float = 1.0
    loss: str = "ce"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got {self.norm!r}")
        check_steps(self.steps, "steps")
        if self.alpha is not None:
            check_eps(self.alpha, "alpha (the step size)")
        check_eps(self.decay, "decay (the momentum decay mu)")
        check_loss(self.loss)

    def _open(self, model: nn.Module, x: torch.Tensor) -> Counter:
        check_ensemble(model, self.name)
        return Counter(model)


def l1_sum_normalise(g: torch.Tensor) -> torch.Tensor:
    """``g / ||g||_1`` per sample (``(N, ...)``), the L1 *sum*, as SVRE's and CWA's papers write MI's accumulator
    (Dong et al., CVPR 2018). The gradient engine's ``transforms.l1_normalise`` divides by the *mean* ``|g|`` (the MI
    authors' code); a sign step cannot tell the two apart, but accumulations of differently scaled terms can."""
    return g / g.abs().flatten(1).sum(1).clamp_min(1e-12).view(-1, *([1] * (g.ndim - 1)))


class MemberAccess:
    """Loss gradients of an ensemble and of its members, counted (see the module docstring).

    Args:
        counter: the attack's counter; ``counter.model`` must be an :class:`Ensemble`.
        y: true labels ``(N,)``.
        target: target labels ``(N,)`` or ``None``.
        loss: a loss name of :data:`advkit.attacks.core.losses.LOSSES`, ascended.
    """

    def __init__(self, counter: Counter, y: torch.Tensor, target: torch.Tensor | None, loss: str) -> None:
        self.counter = counter
        self.ensemble = check_ensemble(counter.model, "this attack")
        self.y, self.target, self.loss = y, target, loss
        self.forward = 0  # member passes
        self.backward = 0

    @property
    def size(self) -> int:
        """The number of members ``K``."""
        return len(self.ensemble.members)

    def _loss(self, logits: torch.Tensor) -> torch.Tensor:
        return attack_loss(logits, self.y, self.target, self.loss)

    def fused(self, x: torch.Tensor) -> torch.Tensor:
        """The gradient ``(N, C, H, W)`` of the ensemble's loss at ``x`` (its fuse: the loss of the fused output,
        or for ``fuse="loss"`` the weighted mean of the members' losses); one counted ensemble pass each way."""
        leaf = x.detach().requires_grad_(True)
        return self.counter.grad(self.counter.loss(leaf, self._loss), leaf)

    def member(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """The gradient ``(N, C, H, W)`` of member ``k``'s own loss at ``x``; one counted member pass each way."""
        leaf = x.detach().requires_grad_(True)
        self.forward += 1
        loss = self._loss(self.ensemble.members[k](leaf))
        self.backward += 1
        (g,) = torch.autograd.grad(loss, leaf)
        return g

    def close(self) -> None:
        """Record the member passes in ``info`` and add their ensemble-equivalent to the counter."""
        k = self.size
        self.counter.forward += math.ceil(self.forward / k)
        self.counter.backward += math.ceil(self.backward / k)
        self.counter.info.update(member_forward_passes=self.forward, member_backward_passes=self.backward)
