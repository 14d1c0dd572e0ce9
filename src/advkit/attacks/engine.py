"""The one iterative engine behind FGSM, I-FGSM, PGD, MI, DI, TI, SGM and their combinations.

Each step: (DI) transform the input, forward, loss, ``torch.autograd.grad`` to the input, (TI) smooth the
gradient, (MI) accumulate the L1-normalised gradient with decay ``mu``, take the step (sign for L-inf, unit L2
direction for L2) of size ``alpha``, project onto the budget and ``[0, 1]``. SGM is a backward-pass modifier: the
whole loop runs inside :func:`advkit.backprop.skip_gradient`, which decays the gradient through residual
branches. The order follows the papers (Dong et al. 2019 apply TI before momentum; Dong et al. 2018 take the sign
after the momentum accumulation).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from advkit.attacks.base import Attack, Counter, attack_loss, check_eps, project
from advkit.attacks.transforms import (
    gaussian_kernel,
    input_diversity,
    l1_normalise,
    random_start,
    smooth_gradient,
    step_direction,
)


@dataclass(frozen=True)
class Iterative(Attack):
    """A gradient attack composed from parts (see :func:`advkit.attacks.create` for the names).

    Attributes:
        eps: budget in pixel units of ``[0, 1]`` (L-inf radius, or L2 radius when ``norm="l2"``).
        steps: number of iterations (1 with ``alpha = eps`` is FGSM).
        alpha: step size; ``None`` means ``eps / steps`` (Kurakin et al. 2017 / Dong et al. 2018), or
            ``2.5 * eps / steps`` when ``random_init`` (Madry et al. 2018).
        norm: ``"linf"`` or ``"l2"``.
        random_init: start from a uniform random point in the ball (PGD).
        loss: ``"ce"`` (cross-entropy, summed over the batch as in the SGM authors' code) or ``"margin"``.
        decay: MI-FGSM momentum decay ``mu`` (Dong et al. 2018, default 1.0), ``None`` for no momentum.
        di_prob: DI transform probability (Xie et al. 2019, default 0.5), ``None`` for no DI.
        di_resize_rate: DI's largest size relative to the input (330/299 ~ 1.1).
        ti_kernel: TI Gaussian kernel size (Dong et al. 2019, default 15), ``None`` for no TI.
        ti_nsig: TI kernel span in standard deviations (default 3).
        gamma: SGM decay on residual gradients (Wu et al. 2020), ``None`` for no SGM, or ``"auto"``: the source
            model card's ``sgm_gamma`` when it has one (advkit's zoo, chosen on held-out images), else the
            authors' rule: 0.5 for a source whose skip connections are all dense (DenseNet), 0.2 otherwise.
        sgm_variant: ``"formula"`` (the paper's equation on every residual/dense branch) or ``"original"``
            (the authors' released code on torchvision-structured ResNets and DenseNets).
        label: the name the attack was created from (``"sgm+mi"``), used in reports.
    """

    name: ClassVar[str] = "iterative"

    eps: float = 8 / 255
    steps: int = 10
    alpha: float | None = None
    norm: str = "linf"  # type: ignore[misc]  # an instance field here, a ClassVar on other attacks
    random_init: bool = False
    loss: str = "ce"
    decay: float | None = None
    di_prob: float | None = None
    di_resize_rate: float = 1.1
    ti_kernel: int | None = None
    ti_nsig: float = 3.0
    gamma: float | str | None = None
    sgm_variant: str = "formula"
    label: str = "ifgsm"

    def __post_init__(self) -> None:
        check_eps(self.eps)
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")
        if self.alpha is not None:
            check_eps(self.alpha, "alpha (the step size)")
        if self.norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got {self.norm!r}")
        if self.loss not in ("ce", "margin"):
            raise ValueError(f"loss must be 'ce' or 'margin', got {self.loss!r}")
        if self.decay is not None and not (self.decay >= 0):
            raise ValueError(f"momentum decay must be >= 0, got {self.decay!r}")
        if self.di_prob is not None and not (0.0 <= self.di_prob <= 1.0):
            raise ValueError(f"DI probability must be in [0, 1], got {self.di_prob!r}")
        if not self.di_resize_rate > 1.0:
            raise ValueError(f"DI resize_rate must be > 1, got {self.di_resize_rate!r}")
        if self.ti_kernel is not None:
            gaussian_kernel(self.ti_kernel, self.ti_nsig)  # validates
        if self.gamma is not None and self.gamma != "auto" and not (
                isinstance(self.gamma, (int, float)) and 0.0 < self.gamma <= 1.0):
            raise ValueError(f"SGM gamma must be in (0, 1] or 'auto', got {self.gamma!r}")
        if self.sgm_variant not in ("formula", "original"):
            raise ValueError(f"sgm_variant must be 'formula' or 'original', got {self.sgm_variant!r}")

    @property
    def step_size(self) -> float:
        """The step size actually used."""
        if self.alpha is not None:
            return self.alpha
        return (2.5 if self.random_init else 1.0) * self.eps / self.steps

    def config(self) -> dict[str, Any]:
        """The resolved configuration, for run records."""
        from dataclasses import asdict

        out = asdict(self)
        out["alpha"] = self.step_size
        return out

    def _run(self, model: Counter, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
             generator: torch.Generator | None) -> torch.Tensor:
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        alpha = self.step_size
        kernel = gaussian_kernel(self.ti_kernel, self.ti_nsig) if self.ti_kernel is not None else None
        x_adv = random_start(x, self.eps, self.norm, g) if self.random_init else x.clone()
        momentum = torch.zeros_like(x) if self.decay is not None else None
        scope: contextlib.AbstractContextManager[Any]
        gamma = resolve_gamma(self.gamma, model.model)
        if gamma is not None:
            from advkit.backprop import skip_gradient

            scope = skip_gradient(model.model, gamma=gamma, variant=self.sgm_variant)
        else:
            scope = contextlib.nullcontext()
        with scope as found:
            for _ in range(self.steps):
                x_adv.requires_grad_(True)
                inp = input_diversity(x_adv, self.di_prob, self.di_resize_rate, g) if self.di_prob else x_adv
                loss = attack_loss(model(inp), y, target, self.loss)
                grad = model.grad(loss, x_adv)
                if kernel is not None:
                    grad = smooth_gradient(grad, kernel)
                if momentum is not None:
                    momentum = self.decay * momentum + l1_normalise(grad)  # type: ignore[operator]
                    grad = momentum
                with torch.no_grad():
                    x_adv = project(x_adv.detach() + alpha * step_direction(grad, self.norm), x, self.eps, self.norm)
        if found is not None:
            model.info["sgm"] = {
                "variant": self.sgm_variant,
                "gamma": gamma,
                "connections": len(found),
                "hooks_fired": int(sum(getattr(c, "fired", 0) for c in found)),
            }
        return x_adv.detach()


def resolve_gamma(gamma: float | str | None, model: torch.nn.Module) -> float | None:
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
