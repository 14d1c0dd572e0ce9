"""Backward-pass modifiers as parts: SGM and LinBP, each a scope active for the whole attack.

* ``sgm``: Wu et al., ICLR 2020 (:func:`advkit.backprop.skip_gradient`): the gradient through every residual
  branch or dense layer's new features is multiplied by ``gamma``.
* ``linbp``: Guo, Li, Chen, NeurIPS 2020, "Backpropagating Linearly Improves Transferability of Adversarial
  Examples" (:func:`advkit.backprop.linear_backprop`): from a chosen residual block on, the ReLUs inside residual
  branches pass the gradient unmasked (the ReLU after each addition keeps its mask, as in the authors' code) and each
  residual branch's gradient is re-normalised to its true norm.

LinBP's scope is entered first (order 10, SGM 20), so ``sgm+linbp`` decays LinBP's re-normalised branch gradient
by gamma, as the LinBP authors combine the two.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from advkit.attacks.gradient.parts import Context, Part, register_part
from advkit.models.ensemble import Ensemble


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


def _has_skips(model: nn.Module, kind: str | None = None) -> bool:
    """Whether ``model`` has skip connections (of ``kind``, ``"residual"`` or ``"dense"``, when given)."""
    from advkit.backprop import find_connections

    try:
        found = find_connections(model)
    except ValueError:  # no skip connection at all
        return False
    return any(kind is None or (c.kind == kind and c.block) for c in found)


def _member_name(m: nn.Module, i: int) -> str:
    return str(getattr(m, "name", None) or f"member {i}")


@contextmanager
def per_member(model: nn.Module, what: str, enter: Callable[[nn.Module], AbstractContextManager[Any]],
               kind: str | None = None, every: bool = False) -> Iterator[list[tuple[str, Any]]]:
    """Enter ``enter(member)`` for each member of an ensemble that has skip connections (of ``kind`` when given),
    or for every member (``every``); yields ``(name, found)`` per member, ``found`` ``None`` for a member left
    untouched.

    Raises:
        ValueError: no member has such connections (``what`` names the method).
    """
    members = list(model.members) if isinstance(model, Ensemble) else [model]
    skips = [True] * len(members) if every else [_has_skips(m, kind) for m in members]
    if not any(skips):
        names = ", ".join(_member_name(m, i) for i, m in enumerate(members))
        need = f"{kind} blocks" if kind else "skip connections"
        example = "resnet20" if kind else "resnet20, densenet_bc40"
        raise ValueError(f"{what} needs {need}, and no member of this ensemble has any ({names}); add a member with "
                         f"them ({example}) or drop {what}")
    out: list[tuple[str, Any]] = []
    with ExitStack() as stack:
        for i, (m, has) in enumerate(zip(members, skips, strict=True)):
            out.append((_member_name(m, i), stack.enter_context(enter(m)) if has else None))
        yield out


def _member_info(found: list[tuple[str, Any]], row: Callable[[Any], dict[str, Any]]) -> list[dict[str, Any]]:
    """One info row per ensemble member: ``row(found)``, or a note that the member was left untouched."""
    return [{"member": name, **row(f)} if f is not None else
            {"member": name, "untouched": "no skip connections of the kind it acts on"} for name, f in found]


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
        """SGM on ``model``, or on each member of an ensemble that has skip connections with that member's own
        gamma (``"auto"``: its card's); members without are left untouched and the report says so."""
        from advkit.backprop import skip_gradient

        if not isinstance(model, Ensemble):
            gamma = resolve_gamma(self.gamma, model)
            ctx.state["sgm_gamma"] = gamma
            return skip_gradient(model, gamma=float(gamma or 0.2), variant=self.sgm_variant)
        gammas: dict[int, float | None] = {}
        ctx.state["sgm_gammas"] = gammas

        def enter(m: nn.Module) -> AbstractContextManager[Any]:
            gammas[id(m)] = gamma = resolve_gamma(self.gamma, m)
            return skip_gradient(m, gamma=float(gamma or 0.2), variant=self.sgm_variant)

        ctx.state["sgm_members"] = list(model.members)
        return per_member(model, "SGM", enter)

    def report(self, found: Any, ctx: Context) -> None:
        if "sgm_members" not in ctx.state:
            ctx.info["sgm"] = {"variant": self.sgm_variant, "gamma": ctx.state["sgm_gamma"],
                               "connections": len(found),
                               "hooks_fired": int(sum(getattr(c, "fired", 0) for c in found))}
            return
        gammas = ctx.state["sgm_gammas"]
        rows = _member_info(found, lambda f: {"connections": len(f),
                                              "hooks_fired": int(sum(getattr(c, "fired", 0) for c in f))})
        for row, m in zip(rows, ctx.state["sgm_members"], strict=True):
            if "untouched" not in row:
                row["gamma"] = gammas[id(m)]
        ctx.info["sgm"] = {"variant": self.sgm_variant, "gamma": self.gamma,
                           "connections": sum(r.get("connections", 0) for r in rows),
                           "hooks_fired": sum(r.get("hooks_fired", 0) for r in rows), "members": rows}


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
        """LinBP on ``model``, or on each member of an ensemble that has skip connections (its own block)."""
        from advkit.backprop.linbp import linear_backprop

        def enter(m: nn.Module) -> AbstractContextManager[Any]:
            return linear_backprop(m, start=self.linbp_start, renorm=self.linbp_renorm)

        if not isinstance(model, Ensemble):
            return enter(model)
        ctx.state["linbp_members"] = True
        return per_member(model, "LinBP", enter, kind="residual")

    def _row(self, found: Any) -> dict[str, Any]:
        return {"start": found.start, "blocks": list(found.blocks), "relus": found.relus,
                "renorm": self.linbp_renorm, "hooks_fired": found.fired, "renorm_branch_passes": found.renorm_passes,
                "kept": found.kept, "unsplit": list(found.unsplit)}

    def report(self, found: Any, ctx: Context) -> None:
        if "linbp_members" not in ctx.state:
            ctx.info["linbp"] = self._row(found)
            return
        rows = _member_info(found, self._row)
        ctx.info["linbp"] = {"renorm": self.linbp_renorm, "hooks_fired": sum(r.get("hooks_fired", 0) for r in rows),
                             "members": rows}
