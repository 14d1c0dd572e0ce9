"""Backward-pass modifiers as parts: SGM and LinBP, each a scope active for the whole attack.

* ``sgm``: Wu et al., ICLR 2020 (:func:`advkit.backprop.skip_gradient`): the gradient through every residual
  branch or dense layer's new features is multiplied by ``gamma``.
* ``linbp``: Guo, Li, Chen, NeurIPS 2020, "Backpropagating Linearly Improves Transferability of Adversarial
  Examples" (:func:`advkit.backprop.linear_backprop`): from a chosen residual block on, ReLUs pass the gradient
  unmasked and each residual branch's gradient is re-normalised to its true norm.

LinBP's scope is entered first (order 10, SGM 20), so ``sgm+linbp`` decays LinBP's re-normalised branch gradient
by gamma, as the LinBP authors combine the two.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from advkit.attacks.gradient.parts import Context, Part, register_part


def resolve_gamma(gamma: float | str | None, model: nn.Module) -> float | None:
    """The SGM decay to use on ``model``: ``gamma`` itself, or for ``"auto"`` the model card's ``sgm_gamma``, else
    0.5 when every skip connection found is dense (the authors' DenseNet value) and 0.2 otherwise (ResNets)."""
    if gamma != "auto":
        return None if gamma is None else float(gamma)
    card = getattr(model, "card", None) or {}
    if card.get("sgm_gamma") is not None:
        return float(card["sgm_gamma"])
    if card.get("connections") in ("residual", "dense"):
        return 0.5 if card["connections"] == "dense" else 0.2
    from advkit.backprop import find_connections

    found = find_connections(model)
    return 0.5 if found and all(c.kind == "dense" for c in found) else 0.2


@register_part
@dataclass(frozen=True)
class SkipGradient(Part):
    """SGM (Wu et al. 2020). ``gamma`` in (0, 1] or ``"auto"`` (the zoo card's tuned value, else 0.2 for ResNets
    and 0.5 for DenseNets); ``sgm_variant`` ``"formula"`` (the paper's equation) or ``"original"`` (the authors'
    released code). The step schedule stays the base attack's, so ``ifgsm`` and ``sgm`` differ in SGM alone."""

    token: ClassVar[str] = "sgm"
    hook: ClassVar[str] = "scope"
    order: ClassVar[int] = 20
    paper: ClassVar[str] = "Wu et al. 2020"
    needs_skip_connections: ClassVar[bool] = True
    aliases: ClassVar[dict[str, str]] = {"variant": "sgm_variant"}

    gamma: float | str = "auto"
    sgm_variant: str = "formula"

    def check(self) -> None:
        g = self.gamma
        if g != "auto" and (isinstance(g, bool) or not isinstance(g, (int, float)) or not 0.0 < g <= 1.0):
            raise ValueError(f"SGM gamma must be in (0, 1] or 'auto', got {g!r}")
        if self.sgm_variant not in ("formula", "original"):
            raise ValueError(f"sgm_variant must be 'formula' or 'original', got {self.sgm_variant!r}")

    def scope(self, model: nn.Module, ctx: Context) -> AbstractContextManager[Any]:
        from advkit.backprop import skip_gradient

        gamma = resolve_gamma(self.gamma, model)
        ctx.state["sgm_gamma"] = gamma
        return skip_gradient(model, gamma=float(gamma or 0.2), variant=self.sgm_variant)

    def report(self, found: Any, ctx: Context) -> None:
        ctx.info["sgm"] = {"variant": self.sgm_variant, "gamma": ctx.state["sgm_gamma"], "connections": len(found),
                           "hooks_fired": int(sum(getattr(c, "fired", 0) for c in found))}


@register_part
@dataclass(frozen=True)
class LinearBackprop(Part):
    """LinBP (Guo et al. 2020): ReLU gradients made linear from residual block ``linbp_start`` on (``"auto"``:
    the first block of the second half of the network's residual blocks, in forward order; an integer: that
    block's index), residual branches re-normalised (``linbp_renorm``)."""

    token: ClassVar[str] = "linbp"
    hook: ClassVar[str] = "scope"
    order: ClassVar[int] = 10
    paper: ClassVar[str] = "Guo et al. 2020"
    needs_skip_connections: ClassVar[bool] = True
    aliases: ClassVar[dict[str, str]] = {"start": "linbp_start", "renorm": "linbp_renorm"}

    linbp_start: int | str = "auto"
    linbp_renorm: bool = True

    def check(self) -> None:
        s = self.linbp_start
        if s != "auto" and (isinstance(s, bool) or not isinstance(s, int) or s < 0):
            raise ValueError(f"linbp_start must be 'auto' or a block index >= 0, got {s!r}")
        if not isinstance(self.linbp_renorm, bool):
            raise ValueError(f"linbp_renorm must be true or false, got {self.linbp_renorm!r}")

    def scope(self, model: nn.Module, ctx: Context) -> AbstractContextManager[Any]:
        from advkit.backprop.linbp import linear_backprop

        return linear_backprop(model, start=self.linbp_start, renorm=self.linbp_renorm)

    def report(self, found: Any, ctx: Context) -> None:
        ctx.info["linbp"] = {"start": found.start, "blocks": list(found.blocks), "relus": found.relus,
                             "renorm": self.linbp_renorm, "hooks_fired": found.fired,
                             "renorm_branch_passes": found.renorm_passes}
