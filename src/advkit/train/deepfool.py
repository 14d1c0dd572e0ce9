"""DeepFool (Moosavi-Dezfooli, Fawzi & Frossard, CVPR 2016): the smallest step across the nearest linearised
class boundary, repeated until the label changes; and the universal perturbation built on it (Moosavi-Dezfooli,
Fawzi, Fawzi & Frossard, CVPR 2017, Algorithm 1).

DeepFool, multi-class (Algorithm 2 of the 2016 paper), on the ``candidates`` classes ranked highest at the start:
with ``w_k = grad f_k - grad f_k0`` and ``f_k = f_k - f_k0`` at the current point, step to the boundary ``l``
minimising ``|f_l| / ||w_l||_q`` (``q`` the dual norm: 2 for L2, 1 for L-inf), by ``|f_l| / ||w_l||_2^2 w_l``
(L2) or ``|f_l| / ||w_l||_1 sign(w_l)`` (L-inf); the total step is scaled by ``1 + overshoot`` (0.02) and the
point clipped to ``[0, 1]``; at most ``max_iter`` steps (50).

The universal perturbation ``v`` (the 2017 paper): pass over the images in random order; for each one that ``x +
v`` does not fool, add DeepFool's minimal L2 perturbation of ``x + v`` (when it converged within ``max_iter_df =
10`` steps, as in the authors' code) and project ``v`` back onto the ``norm`` ball of radius ``xi``; stop when
``v`` fools at least ``1 - delta`` of the images (``delta = 0.2``) or after ``max_passes`` passes. Labels are the
model's own predictions on the clean images. The pass whose ``v`` fools the most images is kept (the algorithm's
last ``v`` can fool fewer: its steps accumulate).
"""

from __future__ import annotations

import torch
from torch import nn

from advkit.models.frozen import frozen_eval
from advkit.progress import ProgressFn, report

__all__ = ["deepfool", "universal_perturbation"]


def deepfool(model: nn.Module, x: torch.Tensor, *, norm: str = "linf", candidates: int = 10,
             overshoot: float = 0.02, max_iter: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepFool on a batch (each image on its own); returns ``(x_adv, converged)``: the perturbed batch in
    ``[0, 1]`` and whether each image's label changed within ``max_iter`` steps."""
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    with torch.no_grad():
        logits0 = model(x)
    n, k = logits0.shape
    top = logits0.argsort(1, descending=True)[:, :min(candidates, k)]
    label0 = top[:, 0]
    r_tot = torch.zeros_like(x)
    point = x.clone()
    active = torch.ones(n, dtype=torch.bool, device=x.device)
    for _ in range(max_iter):
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        p = point[idx].detach().requires_grad_(True)
        with torch.enable_grad():
            out = model(p)
            cls = top[idx]
            f = out.gather(1, cls)                                       # (m, c): f_k for the candidates
            grads = [torch.autograd.grad(f[:, j].sum(), p, retain_graph=j < cls.shape[1] - 1)[0]
                     for j in range(cls.shape[1])]
        still = out.argmax(1) == label0[idx]
        active[idx[~still]] = False
        if not still.any():
            break
        g = torch.stack(grads, 1)                                         # (m, c, C, H, W)
        w = (g[:, 1:] - g[:, :1]).flatten(2)                               # (m, c - 1, d)
        fk = (f[:, 1:] - f[:, :1]).detach()                                # (m, c - 1)
        dual = w.norm(p=2 if norm == "l2" else 1, dim=2).clamp_min(1e-12)
        ratio = fk.abs() / dual
        best = ratio.argmin(1)
        wl = w[torch.arange(len(idx)), best]
        fl = fk[torch.arange(len(idx)), best].abs()
        if norm == "l2":
            step = (fl + 1e-4) / wl.norm(dim=1).clamp_min(1e-12) ** 2
            r = step[:, None] * wl
        else:
            step = (fl + 1e-4) / wl.abs().sum(1).clamp_min(1e-12)
            r = step[:, None] * wl.sign()
        r = r.view(-1, *x.shape[1:])
        sel = idx[still]
        r_tot[sel] = r_tot[sel] + r[still]
        point[sel] = (x[sel] + (1 + overshoot) * r_tot[sel]).clamp(0, 1)
    converged = ~active
    return point.detach(), converged


def universal_perturbation(model: nn.Module, x: torch.Tensor, *, xi: float, norm: str = "linf",
                           delta: float = 0.2, max_passes: int = 10, overshoot: float = 0.02,
                           max_iter_df: int = 10, seed: int = 0,
                           progress: ProgressFn | None = None) -> tuple[torch.Tensor, list[float]]:
    """A universal perturbation for ``model`` from the images ``x`` (Moosavi-Dezfooli et al. 2017, Algorithm 1).

    Args:
        model: the classifier (pixels in ``[0, 1]`` to logits); its own predictions on ``x`` are the labels.
        x: the images ``(N, C, H, W)``.
        xi: the radius of ``v``.
        norm: the norm of the radius, ``"linf"`` or ``"l2"``.
        delta: stop once ``v`` fools at least ``1 - delta`` of ``x``.
        max_passes: passes over ``x`` at most.
        overshoot: DeepFool's overshoot.
        max_iter_df: DeepFool's steps per image at most.
        seed: the order in which the images are visited in each pass.
        progress: :data:`advkit.progress.ProgressFn`, called as ``("universal perturbation: passes", 0,
            max_passes, "over N images")`` before the first pass and ``(..., passes done, max_passes, "fools R% of
            the images")`` after each; the last call's total is the number of passes made, so ``done`` reaches
            ``total`` also when the target fooling rate stops it early.

    Returns:
        ``(v, fooling)``: the perturbation ``(C, H, W)`` with ``||v|| <= xi`` (the best pass's) and the fooling
        rate on ``x`` after each pass.
    """
    if not 0 < xi:
        raise ValueError(f"xi (the perturbation's radius) must be > 0, got {xi!r}")
    if not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1) (the target fooling rate is 1 - delta), got {delta!r}")
    g = torch.Generator().manual_seed(seed)
    v = torch.zeros_like(x[:1])
    best, best_rate = v.clone(), -1.0
    fooling: list[float] = []
    stage = "universal perturbation: passes"
    with frozen_eval(model):
        with torch.no_grad():
            label = torch.cat([model(x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)])
        report(progress, stage, 0, max_passes, f"over {len(x)} images")
        for p in range(max_passes):
            for i in torch.randperm(len(x), generator=g).tolist():
                xv = (x[i:i + 1] + v).clamp(0, 1)
                with torch.no_grad():
                    if int(model(xv).argmax(1)) != int(label[i]):
                        continue
                moved, ok = deepfool(model, xv, norm="l2", overshoot=overshoot, max_iter=max_iter_df)
                if bool(ok[0]):
                    v = _radius(v + (moved - xv), xi, norm)
            with torch.no_grad():
                pred = torch.cat([model((x[j:j + 500] + v).clamp(0, 1)).argmax(1) for j in range(0, len(x), 500)])
            rate = float((pred != label).float().mean())
            fooling.append(rate)
            if rate > best_rate:
                best, best_rate = v.clone(), rate
            stop = rate >= 1 - delta
            report(progress, stage, p + 1, p + 1 if stop else max_passes, f"fools {100 * rate:.1f}% of the images")
            if stop:
                break
    return best[0].detach(), fooling


def _radius(v: torch.Tensor, xi: float, norm: str) -> torch.Tensor:
    """Project ``v`` onto the ``norm`` ball of radius ``xi`` around 0."""
    if norm == "linf":
        return v.clamp(-xi, xi)
    n = v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.ndim - 1)))
    return v * torch.clamp(xi / n, max=1.0)
