"""The Intermediate Level Attack as a second stage: ``ifgsm+ila``, ``sgm+mi+ila``, ...

Huang, Katsman, He, Gu, Belongie, Lim, "Enhancing Adversarial Example Transferability with an Intermediate
Level Attack", ICCV 2019 (ILAP, the projection loss). The loop's result ``x'`` fixes a direction in the features
``F_l`` of an intermediate layer: ``d = F_l(x') - F_l(x)``. Starting again from ``x``, ``ila_steps`` (10) steps of
the base step rule maximise the projection ``(F_l(x'') - F_l(x)) . d / ||d||`` within the same budget.

The layer is chosen by structure (``ila_layer="auto"``): the output of the middle residual or dense block that
:func:`advkit.backprop.find_connections` finds in forward order (the ILA paper's best layers sit mid-network);
a model without skip connections uses the middle of its convolution and linear layers. A module name (as in
``model.named_modules()``) picks it by hand. Scopes (SGM, LinBP) stay active in this stage. On an ensemble
(:mod:`advkit.models.ensemble`) each member gets its own layer (``auto``, or the same module name in every member)
and its own direction; the projections are averaged with the ensemble's weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from advkit.attacks.core.checks import check_number
from advkit.attacks.gradient.parts import Context, Part, register_part
from advkit.models.ensemble import Ensemble


def ila_layer(model: nn.Module, layer: str = "auto") -> str:
    """The name of the module whose output ILA uses on ``model`` (see the module docstring)."""
    names = dict(model.named_modules())
    if layer != "auto":
        if layer not in names or layer == "":
            some = ", ".join(n for n in list(names)[1:8])
            raise ValueError(f"ila_layer {layer!r} is not a module of this model (e.g. {some}, ...); use 'auto' "
                             "to choose the middle block by structure")
        return layer
    from advkit.backprop import find_connections

    try:
        blocks = list(dict.fromkeys(c.block for c in find_connections(model) if c.block))
    except ValueError:
        blocks = []
    if blocks:
        return blocks[(len(blocks) - 1) // 2]
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if len(layers) < 2:
        raise ValueError("ILA needs an intermediate layer: this model has no skip connections and fewer than two "
                         "convolution / linear layers; pass ila_layer=NAME")
    return layers[(len(layers) - 1) // 2]


@register_part
@dataclass(frozen=True)
class IntermediateLevel(Part):
    """ILAP (Huang et al. 2019): ``ila_steps`` (10) steps maximising the projection on the feature difference at
    ``ila_layer`` (``"auto"``: the middle block) of the first stage's examples."""

    token: ClassVar[str] = "ila"
    hook: ClassVar[str] = "stage"
    order: ClassVar[int] = 10
    paper: ClassVar[str] = "Huang et al. 2019"
    aliases: ClassVar[dict[str, str]] = {"layer": "ila_layer"}

    ila_layer: str = "auto"
    ila_steps: int = 10

    def check(self) -> None:
        if not isinstance(self.ila_layer, str):
            raise ValueError(f"ila_layer must be a module name or 'auto', got {self.ila_layer!r}")
        check_number("ila_steps", self.ila_steps, lo=1, integer=True)

    def refine(self, x_adv: torch.Tensor, ctx: Context) -> torch.Tensor:
        from advkit.attacks.gradient.steps import STEP_RULES

        net = ctx.model.model
        members: list[nn.Module] = list(net.members) if isinstance(net, Ensemble) else []
        # an ensemble: each member's own layer, the projections averaged with the ensemble's weights
        nets, weights = (members, list(net.weights)) if isinstance(net, Ensemble) else ([net], [1.0])
        try:
            names = [ila_layer(m, self.ila_layer) for m in nets]
        except ValueError as e:
            if not members:
                raise
            raise ValueError(f"ILA on an ensemble finds a layer in every member: {e}") from None
        store: dict[int, torch.Tensor] = {}

        def keeper(i: int) -> Any:
            def keep(_m: nn.Module, _i: Any, out: Any) -> None:
                store[i] = out[0] if isinstance(out, tuple) else out
            return keep

        handles = [m.get_submodule(n).register_forward_hook(keeper(i)) for i, (m, n) in enumerate(zip(nets, names,
                                                                                                       strict=True))]
        try:
            with torch.no_grad():
                ctx.model(ctx.x)
                f0 = [store[i].detach().flatten(1) for i in range(len(nets))]
                ctx.model(x_adv)
                d = [store[i].detach().flatten(1) - f0[i] for i in range(len(nets))]
            d = [v / v.norm(dim=1, keepdim=True).clamp_min(1e-12) for v in d]
            rule = STEP_RULES[ctx.norm]
            point = ctx.x.clone()
            for _ in range(self.ila_steps):
                leaf = point.detach().requires_grad_(True)
                ctx.model(leaf)
                projs = [((store[i].flatten(1) - f0[i]) * d[i]).sum() for i in range(len(nets))]
                proj = projs[0]
                if members:
                    proj = proj * weights[0]
                    for w, p in zip(weights[1:], projs[1:], strict=True):
                        proj = proj + w * p
                grad = ctx.model.grad(proj, leaf)
                with torch.no_grad():
                    point = rule.step(point, grad, ctx.alpha, ctx.x, ctx.eps)
        finally:
            for h in handles:
                h.remove()
        ctx.info["ila"] = {"layer": names if members else names[0], "steps": self.ila_steps}
        return point.detach()
