"""The one iterative engine behind every gradient attack composed from parts.

Each step: the update parts may move the point where the gradient is taken (NI's look-ahead); the input parts
turn that point into copies (Admix, SI, DI) and the loss gradients of the copies are averaged (one forward and one
``torch.autograd.grad`` per copy); the gradient parts transform it (variance tuning, then TI); the update parts
accumulate it (MI, NI); the step rule takes the step (sign for L-inf, unit L2 direction for L2) of size
``alpha`` and projects onto the budget and ``[0, 1]``. Scope parts (LinBP, SGM) are backward-pass modifiers
active around the whole loop; stage parts (ILA) refine its result. The loop never names a part: each part says
which hook it fills and in which order (:mod:`advkit.attacks.gradient.parts`).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from advkit.attacks.core.base import Counter, ModelAttack
from advkit.attacks.core.budget import check_eps
from advkit.attacks.core.losses import check_loss
from advkit.attacks.gradient.parts import HOOKS, Context, CopyFn, Part, parts
from advkit.attacks.gradient.scopes import resolve_gamma
from advkit.attacks.gradient.steps import IFGSM, STEP_RULES

__all__ = ["Iterative", "resolve_gamma"]


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


@dataclass(frozen=True)
class Iterative(ModelAttack):
    """A gradient attack composed from parts (see :func:`advkit.attacks.create` for the names).

    Attributes:
        eps: budget in pixel units of ``[0, 1]`` (L-inf radius, or L2 radius when ``norm="l2"``).
        steps: number of iterations (1 with ``alpha = eps`` is FGSM).
        alpha: step size; ``None`` means ``eps / steps`` (Kurakin et al. 2017 / Dong et al. 2018), or
            ``2.5 * eps / steps`` with PGD's random start (Madry et al. 2018); ``eps`` for FGSM.
        norm: ``"linf"`` or ``"l2"`` (the step rule and projection).
        loss: a name in :data:`advkit.attacks.core.losses.LOSSES`: ``"ce"`` (cross-entropy, summed over the batch
            as in the SGM authors' code), ``"logit"``, ``"margin"`` or ``"potrip"`` (targeted only).
        label: the name the attack was created from (``"sgm+mi"``), used in reports.
        parts: the parts, one base among them. Their settings read as attributes (``attack.gamma``); a setting
            of a part that is absent reads as ``None``.
    """

    name: ClassVar[str] = "iterative"

    eps: float = 8 / 255
    steps: int = 10
    alpha: float | None = None
    loss: str = "ce"
    label: str = "ifgsm"
    parts: tuple[Part, ...] = field(default=())

    def __post_init__(self) -> None:
        check_eps(self.eps)
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")
        if self.alpha is not None:
            check_eps(self.alpha, "alpha (the step size)")
        if self.norm not in STEP_RULES:
            raise ValueError(f"norm must be one of {', '.join(map(repr, STEP_RULES))}, got {self.norm!r}")
        check_loss(self.loss)
        if not all(isinstance(p, Part) for p in self.parts):
            raise ValueError("parts must be advkit.attacks.gradient.parts.Part instances")
        bases = [p for p in self.parts if p.hook == "base"]
        if len(bases) > 1:
            raise ValueError(f"more than one base ({', '.join(p.token for p in bases)}); pick one")
        for p in self.parts:
            if self.norm not in p.norms:
                raise ValueError(f"{p.token} ({p.paper}) is defined for norm {' or '.join(map(repr, p.norms))} only, "
                                 f"got norm={self.norm!r}; use norm={p.norms[0]!r} or drop {p.token}")
        for what, many in (("objective", [p for p in self.parts if p.hook == "objective"]),
                           ("gradient estimator", [p for p in self.parts if p.replaces_gradient])):
            if len(many) > 1:
                raise ValueError(f"more than one {what} ({', '.join(p.token for p in many)}); pick one")
        ordered = sorted(self.parts, key=lambda p: (HOOKS.index(p.hook), p.order, p.token))
        object.__setattr__(self, "parts", tuple(ordered) if bases else (IFGSM(), *ordered))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        for p in self.__dict__.get("parts", ()):
            if name in p.setting_names():
                return getattr(p, name)
        if any(name in cls.setting_names() for cls in parts().values()):
            return None
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def title(self) -> str:
        """The name the attack was created from (``"sgm+mi"``)."""
        return self.label

    @property
    def base(self) -> Part:
        """The base part (``fgsm``, ``ifgsm`` or ``pgd``)."""
        return next(p for p in self.parts if p.hook == "base")

    @property
    def step_size(self) -> float:
        """The step size actually used."""
        if self.alpha is not None:
            return self.alpha
        if self.base.token == "fgsm":
            return self.eps
        return self.base.alpha_factor() * self.eps / self.steps

    def config(self) -> dict[str, Any]:
        """The resolved configuration, for run records: the common settings, then every part's."""
        out: dict[str, Any] = {"eps": self.eps, "steps": self.steps, "alpha": self.step_size, "norm": self.norm,
                               "loss": self.loss, "label": self.label, "parts": [p.token for p in self.parts]}
        for p in self.parts:
            out.update(p.settings())
        return out

    def _hook(self, hook: str) -> list[Part]:
        return [p for p in self.parts if p.hook == hook]

    def _gradient(self, point: torch.Tensor, ctx: Context, inputs: list[Part], objective: Part) -> torch.Tensor:
        """The loss gradient at ``point``, averaged over the input parts' copies."""
        copies: list[CopyFn] = [_identity]
        for p in inputs:
            copies = p.expand(copies, point, ctx)
        def loss_of(logits: torch.Tensor) -> torch.Tensor:
            return objective.objective(logits, ctx)

        total: torch.Tensor | None = None
        for f in copies:
            leaf = point.detach().requires_grad_(True)
            g = ctx.model.grad(ctx.model.loss(f(leaf), loss_of), leaf)
            total = g if total is None else total + g
        assert total is not None
        return total if len(copies) == 1 else total / len(copies)

    def _run(self, model: Counter, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
             generator: torch.Generator | None) -> torch.Tensor:
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        inputs, updates, gradients = self._hook("input"), self._hook("update"), self._hook("gradient")
        estimator = next((p for p in gradients if p.replaces_gradient), self.base)  # the base's: the loop's own
        objective = next(iter(self._hook("objective")), self.base)  # the base part's objective is the loss

        def gradient(point: torch.Tensor) -> torch.Tensor:
            return self._gradient(point, ctx, inputs, objective)

        ctx = Context(model=model, x=x, y=y, target=target, generator=g, eps=self.eps, alpha=self.step_size,
                      norm=self.norm, loss=self.loss, gradient=gradient)
        x_adv = self.base.start(ctx)
        scoped: list[tuple[Part, Any]] = []
        with ExitStack() as stack:
            for p in (*self._hook("scope"), *self._hook("objective")):
                scoped.append((p, stack.enter_context(p.scope(model.model, ctx))))
            for _ in range(self.steps):
                point = x_adv
                for p in updates:
                    point = p.lookahead(point, ctx)
                grad = estimator.estimate(point, ctx)
                for p in gradients:
                    grad = p.transform(grad, x_adv, ctx)
                for p in updates:
                    grad = p.update(grad, ctx)
                with torch.no_grad():
                    x_adv = self.base.step(x_adv.detach(), grad, ctx)
            for p in self._hook("stage"):
                x_adv = p.refine(x_adv, ctx)
        for p, found in scoped:
            p.report(found, ctx)
        model.info.update(ctx.info)
        return x_adv.detach()
