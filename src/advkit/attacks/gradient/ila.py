"""The Intermediate Level Attack as a second stage: ``ifgsm+ila``, ``sgm+mi+ila``, ...

Huang, Katsman, He, Gu, Belongie, Lim, "Enhancing Adversarial Example Transferability with an Intermediate
Level Attack", ICCV 2019 (ILAP, the projection loss). The loop's result ``x'`` fixes a direction in the features
``F_l`` of an intermediate layer: ``d = F_l(x') - F_l(x)``. Starting again from ``x``, ``ila_steps`` (10) steps of
the base step rule maximise the projection ``(F_l(x'') - F_l(x)) . d / ||d||`` within the same budget.

The layer is chosen by structure (``ila_layer="auto"``): the output of the middle residual or dense block that
:func:`advkit.backprop.find_connections` finds in forward order (the ILA paper's best layers sit mid-network);
a model without skip connections uses the middle of its convolution and linear layers. A module name (as in
``model.named_modules()``) picks it by hand. Scopes (SGM, LinBP) stay active in this stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from advkit.attacks.core.checks import check_number
from advkit.attacks.gradient.parts import Context, Part, register_part


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
        name = ila_layer(net, self.ila_layer)
        store: dict[str, torch.Tensor] = {}

        def keep(_m: nn.Module, _i: Any, out: Any) -> None:
            store["f"] = out[0] if isinstance(out, tuple) else out

        handle = net.get_submodule(name).register_forward_hook(keep)
        try:
            with torch.no_grad():
                ctx.model(ctx.x)
                f0 = store["f"].detach().flatten(1)
                ctx.model(x_adv)
                d = store["f"].detach().flatten(1) - f0
            d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
            rule = STEP_RULES[ctx.norm]
            point = ctx.x.clone()
            for _ in range(self.ila_steps):
                leaf = point.detach().requires_grad_(True)
                ctx.model(leaf)
                proj = ((store["f"].flatten(1) - f0) * d).sum()
                grad = ctx.model.grad(proj, leaf)
                with torch.no_grad():
                    point = rule.step(point, grad, ctx.alpha, ctx.x, ctx.eps)
        finally:
            handle.remove()
        ctx.info["ila"] = {"layer": name, "steps": self.ila_steps}
        return point.detach()
