"""Saving adversarial examples as 8-bit images: round (never truncate) and keep the budget.

Truncation (``astype(uint8)`` without rounding, as in the SGM authors' code) moves every pixel down by up to
1/255 and can erase small perturbations. advkit rounds to the nearest 8-bit level and then clips to the largest
8-bit-representable ball inside the budget, so the saved image is still within eps of the clean one. For an L2
budget, rounding can push an image just past its radius (1 in 61 at eps 1.0 on Fashion-MNIST before this was
done); such an image's 8-bit perturbation is scaled back, by bisection, to the largest one that rounds to within
the radius.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def quantize(x_adv: torch.Tensor, x: torch.Tensor, eps: float | None = None, norm: str = "linf") -> torch.Tensor:
    """Round ``x_adv`` to 8-bit levels ``k/255``; for an L-inf budget keep ``|q - x| <= eps``.

    Args:
        x_adv: adversarial pixels in ``[0, 1]``, ``(N, C, H, W)``.
        x: the clean pixels (assumed on the 8-bit grid, as loaded datasets are).
        eps: the budget (L-inf radius, or L2 radius with ``norm="l2"``); ``None`` skips the projection.
        norm: ``"linf"`` (clipped per pixel) or ``"l2"`` (re-projected after rounding); L0 results are only
            rounded (report the measured budget).

    Returns:
        Float tensor on the 8-bit grid in ``[0, 1]``.
    """
    q = torch.round(x_adv.clamp(0, 1) * 255.0)
    if eps is not None and norm == "linf":
        x8 = torch.round(x * 255.0)
        k = math.floor(eps * 255.0 + 1e-6)
        q = torch.max(torch.min(q, x8 + k), x8 - k).clamp(0, 255)
    elif eps is not None and norm == "l2":
        q = _within_l2(q, torch.round(x * 255.0), eps * 255.0)
    return q / 255.0


def _within_l2(q: torch.Tensor, x8: torch.Tensor, radius: float, iters: int = 30) -> torch.Tensor:
    """``q`` (8-bit levels) with each image whose perturbation from ``x8`` exceeds ``radius`` (in 8-bit units)
    replaced by ``round(t * (q - x8)) + x8`` for the largest ``t`` in ``[0, 1)`` found by bisection that is within
    it (``t = 0``, the clean image, always is)."""
    delta = q - x8
    flat = delta.flatten(1)
    over = flat.norm(dim=1) > radius + 1e-6
    if not bool(over.any()):
        return q
    d = flat[over]
    lo = torch.zeros(d.shape[0], 1, dtype=d.dtype, device=d.device)
    hi = torch.ones(d.shape[0], 1, dtype=d.dtype, device=d.device)
    for _ in range(iters):
        mid = (lo + hi) / 2
        ok = torch.round(mid * d).norm(dim=1, keepdim=True) <= radius + 1e-6
        lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
    fixed = flat.clone()
    fixed[over] = torch.round(lo * d)
    return (x8 + fixed.view_as(delta)).clamp(0, 255)


def save_pngs(images: torch.Tensor, folder: Path, names: list[str]) -> list[Path]:
    """Write each image ``(C, H, W)`` in ``[0, 1]`` (on the 8-bit grid) as a lossless PNG named from ``names``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    arr = torch.round(images.clamp(0, 1) * 255.0).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if len(names) != len(arr):
        raise ValueError(f"{len(arr)} images but {len(names)} names")
    for a, name in zip(arr, names, strict=True):
        img = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a, mode="L" if a.shape[2] == 1 else "RGB")
        p = folder / name
        tmp = p.with_name(f".{p.name}.part")
        img.save(tmp, format="PNG")
        tmp.replace(p)
        out.append(p)
    return out


def load_png(path: Path) -> np.ndarray:
    """Read a PNG back as ``uint8`` ``(C, H, W)``."""
    from PIL import Image

    a = np.asarray(Image.open(path))
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
