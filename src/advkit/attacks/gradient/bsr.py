"""BSR: Wang, Zhang, Zhang, CVPR 2024, "Boosting Adversarial Transferability by Block Shuffle and Rotation".

Each step, the gradient is averaged over ``N`` transformed copies of the point. A copy splits the image into
``n x n`` blocks, shuffles the blocks at random and rotates each block about its own centre by an angle drawn
uniformly in ``[-tau, tau]`` degrees (bilinear interpolation, zeros where the rotated block leaves its square, as
torchvision's ``RandomRotation`` fills). The paper's defaults: ``n = 2`` (2 x 2 blocks), ``tau = 24`` degrees,
``N = 20`` copies; combined with MI-FGSM in the paper (``bsr+mi``).

At 28 px (Fashion-MNIST) the default blocks are 14 x 14, at 32 px 16 x 16, at 224 px 112 x 112: the same
fraction of the image, as the paper defines the split by count, not by size. When a side is not a multiple of
``n`` the split is as even as possible (the first ``side mod n`` rows / columns of blocks one pixel larger) and a
block can only move to a slot of its own shape: the shuffle is a random permutation within each group of blocks
of the same shape (one group, the paper's uniform shuffle, whenever ``n`` divides both sides).

Differences from TransferAttack's ``input_transformation/bsr.py`` (written by the paper's first author), offered
as ``bsr_variant="code"``; the default ``"paper"`` follows the paper's text:

* its default is ``num_block=3`` (3 x 3), the paper's 2 x 2; advkit keeps ``bsr_blocks=2`` for both variants
  (pass ``bsr_blocks=3`` to run the code's setting);
* it does not cut equal blocks: each split draws strip lengths in proportion to weights uniform in ``[1, 2]``
  (rounded; the largest strip takes the rounding remainder), first along a random one of the two axes;
* it shuffles the strips along that axis, rotates each *strip* (not each block) by one angle, and only then cuts
  the rotated strip along the other axis (fresh random lengths per strip) and shuffles those pieces; so the
  rotation acts on ``n`` strips, not on the ``n x n`` blocks.

Random draws (all from ``ctx.generator``; one draw per copy, shared by the batch, as in both codes), per copy in
this order. ``"paper"``: for each shape group (in row-major order of its first block) ``randperm`` of its blocks
(block ``perm[k]`` of the group goes to the group's ``k``-th slot), then one angle per slot in row-major order,
``(2 u - 1) tau`` with ``u = rand(n * n)``. ``"code"``: the first axis (``randint(2)``: 0 cuts rows first),
``n`` weights ``1 + rand(n)`` and ``randperm(n)`` for the first axis, then for each strip of the shuffled order
its angle ``(2 rand() - 1) tau``, ``n`` weights and ``randperm(n)`` for its pieces.

Order among the input parts: SI and Admix (order 10) build their copies first, BSR turns each into ``N`` block
copies (order 15), DI (order 20) then transforms every resulting copy; the number of passes per step is the
product (``si+bsr``: 5 x 20).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from advkit.attacks.core.checks import check_choice, check_number
from advkit.attacks.gradient.parts import Context, CopyFn, Part, register_part

VARIANTS = ("paper", "code")


def rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate ``x`` ``(N, C, h, w)`` about its centre by ``degrees`` (bilinear, zeros outside), keeping its size.

    The output pixel at ``(i, j)`` (offsets ``(di, dj)`` from the centre ``((h-1)/2, (w-1)/2)``) reads the input
    at the centre plus ``(-s dj + c di, c dj + s di)`` with ``c, s = cos, sin`` of the angle. Differentiable in
    ``x``.
    """
    if degrees == 0.0:
        return x
    h, w = x.shape[-2:]
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    theta = torch.tensor([[c, s * h / w, 0.0], [-s * w / h, c, 0.0]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _angles(k: int, tau: float, g: torch.Generator) -> list[float]:
    return ((torch.rand(k, generator=g, dtype=torch.float64) * 2 - 1) * tau).tolist()


def _paper_copy(x: torch.Tensor, n: int, tau: float, g: torch.Generator) -> CopyFn:
    """One copy of the paper's transform, its draws taken now: ``n x n`` even blocks, shuffled within shape groups,
    each slot's block rotated by its own angle."""
    h, w = x.shape[-2:]
    heights = [len(r) for r in torch.arange(h).tensor_split(n)]
    widths = [len(r) for r in torch.arange(w).tensor_split(n)]
    slots = [(i, j) for i in range(n) for j in range(n)]
    groups: dict[tuple[int, int], list[int]] = {}
    for k, (i, j) in enumerate(slots):
        groups.setdefault((heights[i], widths[j]), []).append(k)
    source = list(range(n * n))  # source[slot] = the block placed there
    for members in groups.values():
        perm = torch.randperm(len(members), generator=g).tolist()
        for dst, src in zip(members, perm, strict=True):
            source[dst] = members[src]
    angles = _angles(n * n, tau, g)

    def copy(t: torch.Tensor) -> torch.Tensor:
        blocks = [b for row in t.tensor_split(n, dim=-2) for b in row.tensor_split(n, dim=-1)]
        placed = [rotate(blocks[source[k]], angles[k]) for k in range(n * n)]
        return torch.cat([torch.cat(placed[i * n:(i + 1) * n], dim=-1) for i in range(n)], dim=-2)

    return copy


def strip_lengths(side: int, n: int, g: torch.Generator) -> list[int]:
    """TransferAttack's random cut: ``n`` lengths proportional to weights uniform in ``[1, 2]``, rounded, the
    largest taking the remainder so that they sum to ``side``."""
    weights = 1.0 + torch.rand(n, generator=g, dtype=torch.float64)
    lengths = torch.round(weights / weights.sum() * side).long()
    lengths[lengths.argmax()] += side - int(lengths.sum())
    return lengths.tolist()


def _code_copy(x: torch.Tensor, n: int, tau: float, g: torch.Generator) -> CopyFn:
    """One copy of TransferAttack's transform, its draws taken now: random strips along a random first axis,
    shuffled, each strip rotated, then cut along the other axis at random and shuffled."""
    first = -2 if int(torch.randint(2, (), generator=g)) == 0 else -1
    second = -1 if first == -2 else -2
    lengths = strip_lengths(x.shape[first], n, g)
    order = torch.randperm(n, generator=g).tolist()
    plan: list[tuple[int, float, list[int], list[int]]] = []
    for k in order:
        angle = _angles(1, tau, g)[0]
        plan.append((k, angle, strip_lengths(x.shape[second], n, g), torch.randperm(n, generator=g).tolist()))

    def copy(t: torch.Tensor) -> torch.Tensor:
        strips = t.split(lengths, dim=first)
        out = []
        for k, angle, cut, perm in plan:
            pieces = rotate(strips[k], angle).split(cut, dim=second)
            out.append(torch.cat([pieces[p] for p in perm], dim=second))
        return torch.cat(out, dim=first)

    return copy


@register_part
@dataclass(frozen=True)
class BlockShuffleRotation(Part):
    """BSR (Wang et al. 2024): average the gradients of ``bsr_copies`` (20) copies whose ``bsr_blocks`` x
    ``bsr_blocks`` (2 x 2) blocks are shuffled and each rotated by a random angle in ``[-bsr_angle, bsr_angle]``
    degrees (24); ``bsr_variant="code"`` is TransferAttack's strip-wise version (see the module docstring)."""

    token: ClassVar[str] = "bsr"
    hook: ClassVar[str] = "input"
    order: ClassVar[int] = 15
    paper: ClassVar[str] = "Wang et al. 2024"
    aliases: ClassVar[dict[str, str]] = {"tau": "bsr_angle"}

    bsr_copies: int = 20
    bsr_blocks: int = 2
    bsr_angle: float = 24.0
    bsr_variant: str = "paper"

    def check(self) -> None:
        check_number("bsr_copies (BSR's number of transformed copies N)", self.bsr_copies, lo=1, integer=True)
        check_number("bsr_blocks (BSR's blocks per side n)", self.bsr_blocks, lo=1, integer=True)
        check_number("bsr_angle (BSR's largest rotation tau, degrees)", self.bsr_angle, lo=0.0, hi=180.0)
        check_choice("bsr_variant", self.bsr_variant, VARIANTS)

    def expand(self, copies: list[CopyFn], point: torch.Tensor, ctx: Context) -> list[CopyFn]:
        n = self.bsr_blocks
        if n > min(point.shape[-2:]):
            raise ValueError(f"bsr_blocks={n} is more blocks per side than the image's {tuple(point.shape[-2:])} "
                             "pixels; it must be in [1, the smaller side]")
        make = _paper_copy if self.bsr_variant == "paper" else _code_copy
        out: list[CopyFn] = []
        for f in copies:
            for _ in range(self.bsr_copies):
                out.append(_then(f, make(point, n, self.bsr_angle, ctx.generator)))
        return out


def _then(f: CopyFn, t: CopyFn) -> CopyFn:
    return lambda x: t(f(x))
