"""Parts of the iterative engine and their registry.

Wu et al. (SGM), Dong et al. (MI, TI), Xie et al. (DI), Lin et al. (NI, SI), Wang & He (VT), Wang et al.
(Admix), Guo et al. (LinBP) and Huang et al. (ILA) each change one point of the same iterative gradient loop.
A *part* is that change: a frozen dataclass whose fields are the settings it owns (with the paper's defaults),
whose ``check`` validates them, and whose methods fill one hook point of the loop
(:class:`advkit.attacks.gradient.engine.Iterative`):

=========  ===========================================================  ==========================
hook       what it does                                                 parts
=========  ===========================================================  ==========================
base       the starting point, the step schedule and the step rule      ``fgsm``, ``ifgsm``, ``pgd``
scope      a backward-pass modifier active for the whole attack         ``linbp``, ``sgm``
objective  the loss maximised, in place of the attack's ``loss``        feature-level objectives
update     look-ahead before the gradient, accumulation after it       ``mi``, ``ni``
input      maps the point to the copies whose gradients are averaged   ``admix``, ``si``, ``di``
gradient   transforms the averaged gradient                             ``vt``, ``ti``
stage      refines the loop's result in a second stage                  ``ila``
=========  ===========================================================  ==========================

The loop calls the hooks in its own order (see the engine); a canonical name lists parts in the order of
the table. Within a hook point, parts run in ascending ``order``, which each part states from its paper (Admix and SI
build the copies that DI then transforms; variance tuning adds its term before TI smooths; LinBP's scope is
entered before SGM's so both see the raw branch output). ``@register_part`` adds a part's token to the grammar;
registering a token twice raises. A new part is a new file with one class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch

from advkit.attacks.core.base import attack_loss
from advkit.attacks.core.budget import project, step_direction

if TYPE_CHECKING:
    from torch import nn

    from advkit.attacks.core.base import Counter

HOOKS = ("base", "scope", "objective", "update", "input", "gradient", "stage")

CopyFn = Callable[[torch.Tensor], torch.Tensor]
"""One input copy as a function of the point: ``copy = f(x)``, differentiable in ``x``."""


@dataclass
class Context:
    """What a part may read during one attack call (one batch).

    Attributes:
        model: the source model behind the pass counter; call it, take gradients with ``model.grad``.
        x: the clean batch ``(N, C, H, W)``; y: labels ``(N,)``; target: targets or ``None``.
        generator: the call's random generator (every random draw goes through it).
        eps, alpha, norm, loss: the common settings, ``alpha`` resolved.
        gradient: ``gradient(point)`` is the loss gradient at ``point`` averaged over the input copies (what
            the loop itself uses; variance tuning samples it at neighbours).
        state: per-call scratch space of the parts, keyed by token.
        info: what the parts report (copied into ``AttackResult.info``).
    """

    model: Counter
    x: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor | None
    generator: torch.Generator
    eps: float
    alpha: float
    norm: str
    loss: str
    gradient: Callable[[torch.Tensor], torch.Tensor]
    state: dict[str, Any] = dataclasses.field(default_factory=dict)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Part:
    """Base class of a registered part. Subclasses are frozen dataclasses whose fields are their settings.

    Class attributes:
        token: the grammar name (``"mi"``).
        hook: one of :data:`HOOKS`.
        order: position among the parts of the same hook (ascending).
        paper: the paper it implements.
        aliases: friendlier keyword names mapped to fields (``{"momentum": "decay"}``).
        sets: defaults it gives the common settings (``fgsm``: one step).
        excludes: tokens it cannot be combined with, with the reason.
        needs_skip_connections: the part works only on models with residual / dense connections (SGM, LinBP).
        norms: the budgets the part is defined for (``linf``, ``l2``); the attack refuses another ``norm``.
        replaces_gradient: a gradient part whose :meth:`estimate` gives the step's gradient in place of the loop's
            own (the loop then takes no gradient at the point itself; at most one such part).
    """

    token: ClassVar[str] = ""
    hook: ClassVar[str] = ""
    order: ClassVar[int] = 0
    paper: ClassVar[str] = ""
    aliases: ClassVar[dict[str, str]] = {}
    sets: ClassVar[dict[str, Any]] = {}
    excludes: ClassVar[dict[str, str]] = {}
    needs_skip_connections: ClassVar[bool] = False
    replaces_gradient: ClassVar[bool] = False
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2")

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """``ValueError`` naming the setting that is out of range."""

    @classmethod
    def setting_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def settings(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # -- base
    def start(self, ctx: Context) -> torch.Tensor:
        """The loop's starting point (base parts)."""
        return ctx.x.clone()

    def alpha_factor(self) -> float:
        """Default step size as a multiple of ``eps / steps`` (base parts)."""
        return 1.0

    def step(self, x_adv: torch.Tensor, direction: torch.Tensor, ctx: Context) -> torch.Tensor:
        """The next iterate from the loop's direction (base parts): by default the norm's step rule, a signed (L-inf)
        or unit (L2) step of ``ctx.alpha`` projected onto the budget and ``[0, 1]``."""
        return project(x_adv + ctx.alpha * step_direction(direction, ctx.norm), ctx.x, ctx.eps, ctx.norm)

    # -- scope
    def scope(self, model: nn.Module, ctx: Context) -> AbstractContextManager[Any]:
        """A context manager active for the whole loop (backward-pass modifiers)."""
        return nullcontext()

    def report(self, found: Any, ctx: Context) -> None:
        """Record what the scope did in ``ctx.info`` after the loop."""

    # -- objective
    def objective(self, logits: torch.Tensor, ctx: Context) -> torch.Tensor:
        """The scalar loss the attack maximises at one copy's logits: by default the attack's ``loss``; objective parts
        replace it (feature-level objectives read the features their :meth:`scope` captured in the same pass)."""
        return attack_loss(logits, ctx.y, ctx.target, ctx.loss)

    # -- input
    def expand(self, copies: list[CopyFn], point: torch.Tensor, ctx: Context) -> list[CopyFn]:
        """The copies after this part (input transforms)."""
        return copies

    # -- update
    def lookahead(self, point: torch.Tensor, ctx: Context) -> torch.Tensor:
        """Where the gradient is taken (update parts; NI looks ahead along the momentum)."""
        return point

    def update(self, grad: torch.Tensor, ctx: Context) -> torch.Tensor:
        """The direction after accumulation (update parts)."""
        return grad

    # -- gradient
    def estimate(self, point: torch.Tensor, ctx: Context) -> torch.Tensor:
        """The step's gradient: by default the loop's own (the loss gradient averaged over the input copies); parts
        with ``replaces_gradient`` estimate it otherwise."""
        return ctx.gradient(point)

    def transform(self, grad: torch.Tensor, point: torch.Tensor, ctx: Context) -> torch.Tensor:
        """The gradient after this part; ``point`` is the current iterate (gradient parts)."""
        return grad

    # -- stage
    def refine(self, x_adv: torch.Tensor, ctx: Context) -> torch.Tensor:
        """A second stage started from the loop's result (stage parts)."""
        return x_adv


P = TypeVar("P", bound=type[Part])
_PARTS: dict[str, type[Part]] = {}
_MACROS: dict[str, tuple[str, ...]] = {}


def register_part(cls: P) -> P:
    """Class decorator: add a part's token to the grammar. Registering a token twice raises."""
    from advkit.attacks.core.registry import claim_name

    if not cls.token or cls.hook not in HOOKS:
        raise ValueError(f"part {cls.__name__} needs a token and a hook in {HOOKS}")
    claim_name(cls.token)
    _PARTS[cls.token] = cls
    return cls


def register_macro(name: str, tokens: tuple[str, ...]) -> None:
    """A name that stands for several parts (``vmi`` is ``mi+vt``)."""
    from advkit.attacks.core.registry import claim_name

    claim_name(name)
    _MACROS[name] = tokens


def parts() -> dict[str, type[Part]]:
    """The registered parts by token."""
    return dict(_PARTS)


def macros() -> dict[str, tuple[str, ...]]:
    """The registered macro names and the parts they stand for."""
    return dict(_MACROS)


# ------------------------------------------------------------------------------------------------- checks
