"""The budget: the perturbation ball an attack stays in, the step direction in its norm, and the checks on ``eps``.

Every attack family projects and checks through these, so a budget means the same thing for a gradient attack, a
query attack and an artefact: ``linf`` (a box of half-width ``eps`` per pixel), ``l2`` (a ball of radius ``eps``)
or ``l0`` (the attack bounds the number of changed features itself), always in pixel units of ``[0, 1]``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["check_budget", "check_eps", "distance", "project", "step_direction"]


def check_eps(eps: float, name: str = "eps") -> None:
    """``ValueError`` unless ``eps`` is a finite number >= 0."""
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (pixel units of [0, 1], e.g. 8/255), got {eps!r}")


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project ``x_adv`` onto the ``norm`` ball of radius ``eps`` around ``x``, then onto ``[0, 1]``.

    For ``linf`` both constraints are boxes, so the result satisfies both exactly. For ``l2`` the clip to
    ``[0, 1]`` after the radial projection can only shrink the perturbation, so the L2 budget still holds.
    ``l0`` attacks bound the number of changed features themselves; only ``[0, 1]`` is enforced here.
    """
    if norm == "linf":
        x_adv = torch.max(torch.min(x_adv, x + eps), x - eps)
    elif norm == "l2":
        d = x_adv - x
        n = d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1)))
        x_adv = x + d * torch.clamp(eps / n, max=1.0)
    elif norm != "l0":
        raise ValueError(f"unknown norm {norm!r}")
    return x_adv.clamp(0.0, 1.0)


def step_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The ascent direction: ``sign(grad)`` for L-inf, ``grad / ||grad||_2`` per sample for L2."""
    if norm == "linf":
        return grad.sign()
    if norm == "l2":
        n = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        return grad / n.view(-1, *([1] * (grad.ndim - 1)))
    raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")


def check_budget(eps: float, norm: str = "linf", *, allow_large: bool = False, flag: str | None = "--allow-large-eps",
                 shape: tuple[int, ...] | None = None) -> None:
    """``ValueError`` for a budget larger than the whole pixel box, checked against the attack's own ``norm``.

    An L-inf ``eps`` above 1 covers the whole range of pixels in ``[0, 1]`` and is almost always a budget on the
    0-255 scale (``8`` meant as ``8/255``): refused unless ``allow_large`` (``flag`` names that switch; ``None``:
    there is none). An L2 radius above 1 is ordinary; one above ``sqrt(C * H * W)`` (images of ``shape``, when
    given) is more than the distance between an all-black and an all-white image, and is refused.
    """
    if norm == "linf" and eps > 1 and not allow_large:
        fix = f"If you mean {eps:g}, pass {flag}" if flag else "Use at most 1"
        raise ValueError(f"eps {eps:g} is larger than the whole pixel range for an L-inf radius: advkit's budgets "
                         f"are in pixel units of [0, 1], so 8 on the 0-255 scale is 8/255 ({8 / 255:.4f}). {fix}")
    if norm == "l2" and shape is not None:
        d = math.prod(shape)
        if eps > math.sqrt(d):
            raise ValueError(f"eps {eps:g} is an L2 radius larger than the whole image box of "
                             f"{'x'.join(map(str, shape))} images (sqrt({d}) = {math.sqrt(d):.2f}, the L2 diameter "
                             f"of the pixel cube: the distance from an all-black to an all-white image); use at most "
                             f"{math.sqrt(d):.2f} (or an L-inf budget: norm linf)")


def distance(d: torch.Tensor, norm: str) -> torch.Tensor:
    """``(n,)``: the ``norm`` length (``"linf"`` or ``"l2"``) of each row of ``d`` (any shape ``(n, ...)``)."""
    flat = d.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)
