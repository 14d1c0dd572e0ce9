"""The Feature Importance-aware Attack as an objective part: ``fia+mi`` (the paper's attack), ``fia+mi+di``, ...

Wang, Wang, Yin, Xu, Wu, Jiang, Yu, "Feature Importance-aware Transferable Adversarial Attacks", ICCV 2021.
The features ``f_k`` of a middle layer are weighted by their importance to the true class ``t``, the *aggregate
gradient* over ``N`` (``fia_copies``, 30) copies of the clean image with random pixels dropped::

    Delta = sum_n d l(x * M_n, t) / d f_k(x * M_n),   M_n ~ Bernoulli(1 - p_d) per pixel and channel,
    Delta = Delta / ||Delta||_2                         (per image),

with ``l(., t)`` the true class's logit and ``p_d`` (``fia_drop``) the drop probability: 0.3, the paper's value
for normally trained surrogates (0.1 against defences). The attack then *minimises* ``sum(Delta * f_k(x_adv))``
(suppressing important features, promoting trivial ones); the engine maximises this part's objective, its negative.
The paper optimises with MI-FGSM (decay 1.0, 10 steps): write ``fia+mi``. ``Delta`` is computed once per call on
the clean images, one copy at a time (``N`` forward and backward passes, counted; the backward passes stop at the
middle layer). Masks are drawn from the call's generator. At 28 px, dropping 30% of the pixels removes far more of
a digit or garment stroke than of a 224 px photograph; the defaults are kept as the paper's.

The layer is chosen by structure as ILA's is (:func:`advkit.attacks.gradient.ila.ila_layer`): ``fia_layer="auto"``
is the output of the middle residual / dense block, or the middle convolution / linear layer of a plain network;
a module name picks it by hand.

Differences from released code, as settings: the authors' TensorFlow code uses the logit, as the paper, but keeps
pixels with probability 0.9 (``fia_drop=0.1``, the paper's setting for defences); TransferAttack's
``advanced_objective/fia.py`` takes the gradient of the true class's *softmax probability*
(``fia_variant="transferattack"``). Both normalise ``Delta`` per image by its L2 norm, as here.

Not supported: targeted attacks (the paper defines none; a ``ValueError``) and ensembles of surrogates (one middle
layer per member is not defined by the paper; a ``ValueError``: attack one member, or use ILA).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from advkit.attacks.core.checks import check_choice, check_number
from advkit.attacks.gradient.ila import ila_layer
from advkit.attacks.gradient.parts import Context, Part, register_part
from advkit.models.ensemble import Ensemble

VARIANTS = ("paper", "transferattack")


def middle_layer(model: nn.Module, layer: str, setting: str, method: str) -> str:
    """The middle layer's module name, found as ILA finds its layer; errors name ``setting`` and ``method``."""
    try:
        return ila_layer(model, layer)
    except ValueError as e:
        raise ValueError(str(e).replace("ila_layer", setting).replace("ILA", method)) from None


def refuse(model: nn.Module, ctx: Context, method: str) -> None:
    """``ValueError`` for what a feature-level objective here does not define: a target, an ensemble."""
    if ctx.target is not None:
        raise ValueError(f"{method} is untargeted: its paper defines no targeted version; call it without target")
    if isinstance(model, Ensemble):
        raise ValueError(f"{method} on an ensemble is not supported: the paper defines one middle layer of one "
                         "surrogate; attack a single member (or use ila, which works per member)")


class FeatureTap:
    """A forward hook on the middle layer: keeps its output in ``self.out`` and passes a copy on (so an in-place
    operation after the layer leaves the kept features alone); with ``self.leaf`` set, the kept output is a detached
    leaf that requires grad, so a backward pass stops at the layer."""

    def __init__(self) -> None:
        self.out: torch.Tensor | None = None
        self.leaf = False

    def __call__(self, _m: nn.Module, _i: Any, out: Any) -> Any:
        t = out[0] if isinstance(out, tuple) else out
        if self.leaf:
            t = t.detach().requires_grad_(True)
        self.out = t
        c = t.clone()  # an in-place op after the layer (ReLU(inplace=True)) must not change the kept features
        return c if not isinstance(out, tuple) else (c, *out[1:])

    def features(self) -> torch.Tensor:
        if self.out is None:
            raise RuntimeError("the middle layer's hook saw no forward pass")
        return self.out

    def layer_gradient(self, ctx: Context, x: torch.Tensor,
                       score: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``d score(model(x)) / d features`` (one counted forward and one counted backward pass)."""
        self.leaf = True
        try:
            with torch.enable_grad():
                out = ctx.model(x)
                return ctx.model.grad(score(out), self.features())
        finally:
            self.leaf = False


def true_class_score(y: torch.Tensor, output: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The summed logit (``"logit"``) or softmax probability (``"prob"``) of each image's true class."""
    def score(logits: torch.Tensor) -> torch.Tensor:
        z = logits.softmax(1) if output == "prob" else logits
        return z.gather(1, y[:, None]).sum()
    return score


@contextmanager
def tapped(model: nn.Module, name: str) -> Iterator[FeatureTap]:
    """Install a :class:`FeatureTap` on ``model``'s module ``name`` for the block's duration."""
    tap = FeatureTap()
    handle = model.get_submodule(name).register_forward_hook(tap)
    try:
        yield tap
    finally:
        handle.remove()


@register_part
@dataclass(frozen=True)
class FeatureImportance(Part):
    """FIA (Wang et al. 2021): minimise the middle layer's features weighted by the aggregate gradient of the true
    class's logit over ``fia_copies`` (30) copies with pixels dropped with probability ``fia_drop`` (0.3)."""

    token: ClassVar[str] = "fia"
    hook: ClassVar[str] = "objective"
    order: ClassVar[int] = 10
    paper: ClassVar[str] = "Wang et al. 2021"
    aliases: ClassVar[dict[str, str]] = {"ensemble_number": "fia_copies", "drop_probability": "fia_drop",
                                         "p_d": "fia_drop"}

    fia_layer: str = "auto"
    fia_copies: int = 30
    fia_drop: float = 0.3
    fia_variant: str = "paper"

    def check(self) -> None:
        if not isinstance(self.fia_layer, str):
            raise ValueError(f"fia_layer must be a module name or 'auto', got {self.fia_layer!r}")
        check_number("fia_copies", self.fia_copies, lo=1, integer=True)
        check_number("fia_drop (the drop probability)", self.fia_drop, lo=0.0, hi=1.0, hi_open=True)
        check_choice("fia_variant", self.fia_variant, VARIANTS)

    @contextmanager
    def _scope(self, model: nn.Module, ctx: Context) -> Iterator[str]:
        refuse(model, ctx, "FIA")
        name = middle_layer(model, self.fia_layer, "fia_layer", "FIA")
        with tapped(model, name) as tap:
            score = true_class_score(ctx.y, "prob" if self.fia_variant == "transferattack" else "logit")
            total: torch.Tensor | None = None
            for _ in range(self.fia_copies):
                keep = torch.bernoulli(torch.full_like(ctx.x, 1.0 - self.fia_drop), generator=ctx.generator)
                g = tap.layer_gradient(ctx, ctx.x * keep, score)
                total = g if total is None else total + g
            assert total is not None
            norm = total.flatten(1).norm(dim=1).clamp_min(1e-12)
            ctx.state["fia"] = {"tap": tap, "weights": total / norm.view(-1, *[1] * (total.dim() - 1))}
            yield name

    def scope(self, model: nn.Module, ctx: Context) -> Any:
        return self._scope(model, ctx)

    def objective(self, logits: torch.Tensor, ctx: Context) -> torch.Tensor:
        state = ctx.state["fia"]
        return -(state["weights"] * state["tap"].features()).sum()

    def report(self, found: Any, ctx: Context) -> None:
        ctx.info["fia"] = {"layer": found, "copies": self.fia_copies, "drop": self.fia_drop,
                           "variant": self.fia_variant}
