"""SIA: Wang, Zhang, Zhang, ICCV 2023, "Structure Invariant Transformation for better Adversarial Transferability".

Each step, the gradient is averaged over ``N`` transformed copies of the point. A copy cuts the image into
``s x s`` blocks at random positions (``s - 1`` distinct cut rows and ``s - 1`` distinct cut columns) and applies
to each block one transformation drawn uniformly from the paper's set, keeping the image's block structure:

=====================  =====================================================================================
transformation         on one block ``(N, C, h, w)``
=====================  =====================================================================================
vertical shift         circular roll by ``randint(0, h)`` rows
horizontal shift       circular roll by ``randint(0, w)`` columns
vertical flip          rows reversed
horizontal flip        columns reversed
rotation 180           both reversed
scale                  multiplied by ``u``, uniform in ``[0, 1)``
add noise              plus uniform noise in ``[-16/255, 16/255]``, clipped to ``[0, 1]``
resize                 bilinear down to ``int(0.8 h) + 1`` x ``int(0.8 w) + 1`` and back up (a blur)
DCT                    the orthonormal 2-D DCT with the highest 40% of frequencies along each axis zeroed
dropout                each channel zeroed with probability 0.1, the rest scaled by ``1 / 0.9``
=====================  =====================================================================================

The paper's defaults: ``s = 3``, ``N = 20``, the ten transformations above; combined with MI-FGSM in the paper
(``sia+mi``). At 28 px the 3 x 3 blocks are about 9 px wide (at 224 px, about 75 px); the noise amplitude is in
pixel units and the same at every size.

Differences from TransferAttack's ``input_transformation/sia.py`` (maintained by the paper's first author), offered
as ``sia_variant="code"``; the default ``"paper"`` follows the paper's transformation set:

* its set has seven transformations: the shifts, flips, rotation, scale and noise; resize, DCT and dropout (in the
  paper's set, and in copies of the authors' release) are left out, and its unused Gaussian ``blur`` is not one of
  them;
* its DCT (where a release has it) zeroes every coefficient when ``int(0.4 side)`` is 0 (a ``-0:`` slice); advkit
  zeroes none for blocks under 3 px.

Random draws (all from ``ctx.generator``; one draw per copy, shared by the batch, as in both codes), per copy in
this order: the cut rows ``sorted(randperm(H - 1)[:s - 1] + 1)``, the cut columns likewise, then for each block in
row-major order the transformation ``randint(len(set))`` and its own draws (a shift ``randint(0, side)``; the scale
``rand(())``; the noise ``rand(block shape)``; dropout ``rand(N, C)``).

Order among the input parts: SI and Admix (order 10) build their copies first, SIA turns each into ``N`` block
copies (order 15), DI (order 20) then transforms every resulting copy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from advkit.attacks.core.checks import check_choice, check_number
from advkit.attacks.gradient.parts import Context, CopyFn, Part, register_part

NOISE = 16 / 255
RESIZE = 0.8
DCT_DROP = 0.4
DROPOUT = 0.1

BlockOp = Callable[[torch.Tensor], torch.Tensor]


def dct_matrix(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``(n, n)``: ``D @ v`` is the DCT of ``v``, ``D.T @ c`` its inverse."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.to(dtype=dtype, device=device)


def low_pass(b: torch.Tensor) -> torch.Tensor:
    """Zero the highest ``DCT_DROP`` of the 2-D DCT's frequencies along each axis of ``b`` ``(..., h, w)``."""
    h, w = b.shape[-2:]
    dh, dw = dct_matrix(h, b.dtype, b.device), dct_matrix(w, b.dtype, b.device)
    keep_h = torch.arange(h, device=b.device) < h - int(h * DCT_DROP)
    keep_w = torch.arange(w, device=b.device) < w - int(w * DCT_DROP)
    coef = dh @ b @ dw.T * (keep_h[:, None] & keep_w[None, :]).to(b.dtype)
    return dh.T @ coef @ dw


def _resize(b: torch.Tensor) -> torch.Tensor:
    h, w = b.shape[-2:]
    small = F.interpolate(b, size=(int(h * RESIZE) + 1, int(w * RESIZE) + 1), mode="bilinear", align_corners=False)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def _draw_op(name: str, b: torch.Tensor, g: torch.Generator) -> BlockOp:
    """The transformation ``name`` for a block shaped like ``b``, its random draws taken now."""
    h, w = b.shape[-2:]
    if name == "vertical_shift":
        k = int(torch.randint(0, h, (), generator=g))
        return lambda t: t.roll(k, dims=-2)
    if name == "horizontal_shift":
        k = int(torch.randint(0, w, (), generator=g))
        return lambda t: t.roll(k, dims=-1)
    if name == "vertical_flip":
        return lambda t: t.flip(-2)
    if name == "horizontal_flip":
        return lambda t: t.flip(-1)
    if name == "rotate180":
        return lambda t: t.flip(-2, -1)
    if name == "scale":
        u = float(torch.rand((), generator=g, dtype=torch.float64))
        return lambda t: t * u
    if name == "add_noise":
        noise = ((torch.rand(b.shape, generator=g, dtype=b.dtype) * 2 - 1) * NOISE).to(b.device)
        return lambda t: (t + noise).clamp(0.0, 1.0)
    if name == "resize":
        return _resize
    if name == "dct":
        return low_pass
    if name == "dropout":
        keep = (torch.rand(b.shape[:2], generator=g) >= DROPOUT).to(dtype=b.dtype, device=b.device)
        mask = (keep / (1 - DROPOUT))[..., None, None]
        return lambda t: t * mask
    raise ValueError(f"unknown SIA transformation {name!r}")


CODE_SET = ("vertical_shift", "horizontal_shift", "vertical_flip", "horizontal_flip", "rotate180", "scale",
            "add_noise")
PAPER_SET = (*CODE_SET, "resize", "dct", "dropout")
SETS = {"paper": PAPER_SET, "code": CODE_SET}


def _cuts(side: int, s: int, g: torch.Generator) -> list[int]:
    inner = sorted((torch.randperm(side - 1, generator=g)[:s - 1] + 1).tolist())
    return [0, *inner, side]


def _sia_copy(x: torch.Tensor, s: int, ops: tuple[str, ...], g: torch.Generator) -> CopyFn:
    """One SIA copy, its draws taken now: random ``s x s`` cuts, one random transformation per block."""
    rows, cols = _cuts(x.shape[-2], s, g), _cuts(x.shape[-1], s, g)
    plan: list[list[BlockOp]] = []
    for i in range(s):
        row: list[BlockOp] = []
        for j in range(s):
            block = x[..., rows[i]:rows[i + 1], cols[j]:cols[j + 1]]
            row.append(_draw_op(ops[int(torch.randint(len(ops), (), generator=g))], block, g))
        plan.append(row)

    def copy(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.cat([plan[i][j](t[..., rows[i]:rows[i + 1], cols[j]:cols[j + 1]])
                                     for j in range(s)], dim=-1) for i in range(s)], dim=-2)

    return copy


@register_part
@dataclass(frozen=True)
class StructureInvariant(Part):
    """SIA (Wang et al. 2023): average the gradients of ``sia_copies`` (20) copies cut into ``sia_blocks`` x
    ``sia_blocks`` (3 x 3) random blocks, each transformed by a random member of the paper's ten transformations
    (``sia_variant="code"``: TransferAttack's seven; see the module docstring)."""

    token: ClassVar[str] = "sia"
    hook: ClassVar[str] = "input"
    order: ClassVar[int] = 15
    paper: ClassVar[str] = "Wang et al. 2023"

    sia_copies: int = 20
    sia_blocks: int = 3
    sia_variant: str = "paper"

    def check(self) -> None:
        check_number("sia_copies (SIA's number of transformed copies N)", self.sia_copies, lo=1, integer=True)
        check_number("sia_blocks (SIA's blocks per side s)", self.sia_blocks, lo=1, integer=True)
        check_choice("sia_variant", self.sia_variant, SETS)

    def expand(self, copies: list[CopyFn], point: torch.Tensor, ctx: Context) -> list[CopyFn]:
        s = self.sia_blocks
        if s > min(point.shape[-2:]):
            raise ValueError(f"sia_blocks={s} is more blocks per side than the image's {tuple(point.shape[-2:])} "
                             "pixels; it must be in [1, the smaller side]")
        ops = SETS[self.sia_variant]
        out: list[CopyFn] = []
        for f in copies:
            for _ in range(self.sia_copies):
                out.append(_then(f, _sia_copy(point, s, ops, ctx.generator)))
        return out


def _then(f: CopyFn, t: CopyFn) -> CopyFn:
    return lambda x: t(f(x))
