"""DeCowA: input copies warped by a thin-plate spline whose control points move against the attack.

Lin, Luo, Niu, He, Xie, Shen, Hou, Song, "Boosting Adversarial Transferability across Model Genus by
Deformation-Constrained Warping", AAAI 2024 (DeCoWA). Each step averages the gradients of ``N = 20`` warped copies
of the point (with MI-FGSM's momentum in the paper: use ``decowa+mi``). Copy ``n``:

1. the control points are a uniform ``decowa_mesh_height x decowa_mesh_width`` (3 x 3) mesh over the image in
   ``[-1, 1]^2`` coordinates; the interior ones get a random offset ``xi ~ U(-s/2, s/2)^2`` (``s = 2``, the noise
   scale), the border ones stay;
2. the offset is updated against the attack ("deformation-constrained": the worst-case warp for the attacker),
   ``xi <- xi - rho * grad_xi J(W(x_t, xi), y)`` with ``rho = 0.01``, ``decowa_inner_steps`` times (1), where ``J``
   is the attack's loss (the one the attack ascends; an objective part's loss is not used here);
3. the copy is ``W(x, xi)``: the thin-plate spline through (mesh point -> mesh point + offset) gives, for each output
   pixel, where it samples the input (bilinear, zeros outside), differentiable in ``x``.

The spline: with ``U(r^2) = r^2 log r^2``, ``L = [[U(c_i, c_j), P], [P^T, 0]]``, ``P = [1, c]``, the sampling grid is
``g + M_int @ xi`` with ``M = [U(g, c), P_g] @ L^-1`` restricted to the interior control points (a thin-plate spline
reproduces the affine identity exactly, so zero offsets give the identity warp). ``M`` depends only on the image
size and the mesh; it is computed once per call.

Cost: every copy spends ``decowa_inner_steps`` forward + backward passes on its offsets and one on the gradient, so
a step costs ``N * (1 + decowa_inner_steps)`` passes (40 by default, with ``N`` copies; the inner passes are counted
by the pass counter). Copies are processed one at a time. With other input parts, the warp applies to each of their
copies (order 15: after SI / Admix build theirs, before DI transforms each warped copy).

Differences from TransferAttack's ``decowa.py`` (which follows the authors' release), kept as
``decowa_variant="code"``: (a) it draws one offset map for the whole batch and takes the inner step on the batch-mean
loss, where the paper warps each image by its own offsets (advkit's default: one map per image, the gradient of
that image's loss); (b) it builds the pixel grid with ``linspace(-1, 1, W)`` but samples with
``align_corners=False``, so even zero offsets shrink the image by ``(W - 1) / W`` and blend the border with zeros;
advkit's default samples with ``align_corners=True``, where zero offsets are the identity. The defaults are
TransferAttack's (``num_warping=20``, 3 x 3 mesh, ``noise_scale=2``, ``rho=0.01``, one inner step; the paper's text
was not at hand to check them against its own table), for 224 px ImageNet: the offsets are in units of half the
image side, so at 28 px the same setting moves the centre control point by up to 14 px (as 112 px at 224 px): the
same relative deformation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from advkit.attacks.core.base import attack_loss
from advkit.attacks.core.checks import check_choice, check_number
from advkit.attacks.gradient.parts import Context, CopyFn, Part, register_part

VARIANTS = ("paper", "code")


def mesh_points(height: int, width: int) -> torch.Tensor:
    """The ``height x width`` control points, row-major, as ``(x, y)`` in ``[-1, 1]``: ``(height * width, 2)``
    float64."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, height, dtype=torch.float64),
                            torch.linspace(-1, 1, width, dtype=torch.float64), indexing="ij")
    return torch.stack([xs, ys], dim=-1).reshape(-1, 2)


def _tps_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``U(|a_i - b_j|^2) = r^2 log r^2`` (0 at r = 0): ``(len(a), len(b))``."""
    d2 = (a[:, None, :] - b[None, :, :]).pow(2).sum(-1)
    return torch.where(d2 > 0, d2 * torch.log(d2.clamp_min(1e-300)), torch.zeros_like(d2))


def warp_basis(height: int, width: int, mesh: tuple[int, int]) -> torch.Tensor:
    """How the interior control points move the sampling grid: ``B`` with ``grid = g + B @ xi``.

    Args:
        height, width: the image size.
        mesh: ``(mesh_height, mesh_width)`` control points, each >= 3.

    Returns:
        ``(height * width, (mesh_height - 2) * (mesh_width - 2))`` float64: output pixel ``p`` (row-major) samples
        the input at ``g_p + sum_k B[p, k] * xi_k`` for interior offsets ``xi_k`` (row-major).
    """
    mh, mw = mesh
    c = mesh_points(mh, mw)
    k = c.shape[0]
    lhs = torch.zeros(k + 3, k + 3, dtype=torch.float64)
    p = torch.cat([torch.ones(k, 1, dtype=torch.float64), c], dim=1)
    lhs[:k, :k] = _tps_kernel(c, c)
    lhs[:k, k:] = p
    lhs[k:, :k] = p.T
    g = mesh_points(height, width)
    rows = torch.cat([_tps_kernel(g, c), torch.ones(g.shape[0], 1, dtype=torch.float64), g], dim=1)
    m = torch.linalg.solve(lhs.T, rows.T).T  # rows @ lhs^-1: (HW, k + 3)
    interior = torch.zeros(mh, mw, dtype=torch.bool)
    interior[1:-1, 1:-1] = True
    return m[:, :k][:, interior.flatten()]


def warp(x: torch.Tensor, offsets: torch.Tensor, basis: torch.Tensor, align_corners: bool = True) -> torch.Tensor:
    """``x`` ``(N, C, H, W)`` warped by interior control-point ``offsets`` ``(N or 1, K, 2)`` through ``basis``
    ``(H * W, K)`` (:func:`warp_basis`): bilinear sampling, zeros outside; differentiable in ``x`` and ``offsets``."""
    n, _, h, w = x.shape
    g = mesh_points(h, w).to(dtype=x.dtype, device=x.device)
    grid = g + torch.einsum("pk,bkd->bpd", basis.to(dtype=x.dtype, device=x.device), offsets)
    grid = grid.reshape(grid.shape[0], h, w, 2).expand(n, h, w, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=align_corners)


@register_part
@dataclass(frozen=True)
class DeformationWarping(Part):
    """DeCowA (Lin et al. 2024): ``decowa_copies`` (20) copies warped by a thin-plate spline through a
    ``decowa_mesh_height x decowa_mesh_width`` (3 x 3) mesh whose interior points move by ``U(-s/2, s/2)``
    (``decowa_noise_scale`` s = 2), updated by ``decowa_inner_steps`` (1) steps of ``-decowa_rho`` (0.01) times the
    loss gradient. Costs ``copies * (1 + inner_steps)`` passes per step."""

    token: ClassVar[str] = "decowa"
    hook: ClassVar[str] = "input"
    order: ClassVar[int] = 15
    paper: ClassVar[str] = "Lin et al. 2024"
    aliases: ClassVar[dict[str, str]] = {"num_warping": "decowa_copies", "noise_scale": "decowa_noise_scale",
                                         "rho": "decowa_rho", "mesh_width": "decowa_mesh_width",
                                         "mesh_height": "decowa_mesh_height"}

    decowa_copies: int = 20
    decowa_mesh_height: int = 3
    decowa_mesh_width: int = 3
    decowa_noise_scale: float = 2.0
    decowa_rho: float = 0.01
    decowa_inner_steps: int = 1
    decowa_variant: str = "paper"

    def check(self) -> None:
        check_number("decowa_copies (DeCowA's number of warped copies N)", self.decowa_copies, lo=1, integer=True)
        check_number("decowa_mesh_height (DeCowA's control points per column)", self.decowa_mesh_height, lo=3,
                     integer=True)
        check_number("decowa_mesh_width (DeCowA's control points per row)", self.decowa_mesh_width, lo=3,
                     integer=True)
        check_number("decowa_noise_scale (DeCowA's offset range s)", self.decowa_noise_scale, lo=0.0, lo_open=True)
        check_number("decowa_rho (DeCowA's inner step on the offsets)", self.decowa_rho, lo=0.0)
        check_number("decowa_inner_steps (DeCowA's inner steps on the offsets)", self.decowa_inner_steps, lo=0,
                     integer=True)
        check_choice("decowa_variant", self.decowa_variant, VARIANTS)

    def _basis(self, point: torch.Tensor, ctx: Context) -> torch.Tensor:
        h, w = point.shape[-2:]
        key = f"decowa_basis_{h}x{w}"
        if key not in ctx.state:
            mesh = (self.decowa_mesh_height, self.decowa_mesh_width)
            ctx.state[key] = warp_basis(h, w, mesh).to(dtype=point.dtype, device=point.device)
        return ctx.state[key]

    def offsets(self, x: torch.Tensor, basis: torch.Tensor, ctx: Context) -> torch.Tensor:
        """The worst-case offsets for one copy of ``x``: a uniform draw, then the inner descent steps on the attack's
        loss. Returns ``(N, K, 2)`` (``(1, K, 2)`` for the code variant)."""
        shared = self.decowa_variant == "code"
        k = (self.decowa_mesh_height - 2) * (self.decowa_mesh_width - 2)
        shape = (1 if shared else x.shape[0], k, 2)
        xi = (torch.rand(shape, generator=ctx.generator, dtype=x.dtype) - 0.5).to(x.device) * self.decowa_noise_scale
        align = not shared
        scale = 1.0 / x.shape[0] if shared else 1.0  # the code's batch-mean loss

        def loss(logits: torch.Tensor) -> torch.Tensor:
            return attack_loss(logits, ctx.y, ctx.target, ctx.loss)

        x = x.detach()
        for _ in range(self.decowa_inner_steps):
            leaf = xi.detach().requires_grad_(True)
            g = ctx.model.grad(ctx.model.loss(warp(x, leaf, basis, align), loss), leaf)
            xi = xi - self.decowa_rho * scale * g
        return xi.detach()

    def expand(self, copies: list[CopyFn], point: torch.Tensor, ctx: Context) -> list[CopyFn]:
        basis = self._basis(point, ctx)
        align = self.decowa_variant != "code"
        out: list[CopyFn] = []
        for f in copies:
            source = f(point.detach()).detach()
            for _ in range(self.decowa_copies):
                xi = self.offsets(source, basis, ctx)
                out.append(_warped(f, xi, basis, align))
        return out


def _warped(f: CopyFn, xi: torch.Tensor, basis: torch.Tensor, align: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda t: warp(f(t), xi, basis, align)
