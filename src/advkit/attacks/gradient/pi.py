"""PI-FGSM: the patch-wise iterative base (amplified steps, the cut noise projected onto the neighbours).

Gao, Zhang, Song, Liu, Shen, "Patch-wise Attack for Fooling Deep Neural Network", ECCV 2020 (Algorithm 1). With
``alpha = eps / T`` (the engine's default step), the amplification factor ``beta`` (10), the project kernel ``W_p``
of size ``k`` (3: ``1 / (k^2 - 1)`` everywhere but a zero centre) and the project factor ``gamma``, each step is::

    a_{t+1} = a_t + beta * alpha * sign(g_t)                        # the accumulated amplified noise
    C       = clip(|a_{t+1}| - eps, 0, inf) * sign(a_{t+1})         # the cut noise beyond the eps ball
    P       = gamma * sign(W_p * C)                                  # projected onto each pixel's neighbours
    a_{t+1} = a_{t+1} + P
    x_{t+1} = Clip_{x, eps}(x_t + beta * alpha * sign(g_t) + P)      # and [0, 1]

``g_t`` is the loop's direction: the plain gradient (PI-FGSM), or the momentum, DI copies or TI smoothing of the
parts it is combined with (``pi+mi``, ``pi+di``, ``pi+ti``, ``pi+mi+di+ti``: the paper's MPI-, DPI-, TPI-FGSM and
their combination). ``W_p * C`` is a depth-wise convolution (each channel alone, zero padding). The state ``a`` lives
in ``ctx.state["pi_amplification"]``, one per call. The step needs no more passes than I-FGSM (one gradient per
step and copy).

The project factor: the paper sets ``gamma = beta`` in units of the step ``alpha``, so the projection moves as far as
the amplified step (the authors' released TensorFlow code, qilong-zhang/Patch-wise-iterative-attack:
``gamma = alpha_beta = alpha * amplification_factor``). That is the default (``pi_gamma=None``). TransferAttack's
``pifgsm.py`` fixes it at ``16/255`` in pixel units, which equals ``beta * alpha`` only at ``eps = 16/255, T = 10``;
``pi_variant="code"`` reproduces that (at eps 0.1 and 10 steps
the paper's projection is 0.1, the code's 0.063). ``pi_gamma`` sets any other absolute value. TransferAttack also
offers an L2 update; the paper's algorithm is L-inf only, so the part refuses ``norm="l2"`` at call time.

At 28 px a 3 x 3 kernel spreads the cut noise to the 8 neighbours of a pixel, as at 224 px; only the patches it
builds cover a larger share of the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from advkit.attacks.core.budget import project
from advkit.attacks.core.checks import check_choice, check_number
from advkit.attacks.gradient.parts import Context, Part, register_part

VARIANTS = ("paper", "code")
CODE_GAMMA = 16 / 255
"""TransferAttack's fixed project factor (``gamma=16.0`` divided by 255), in pixel units."""


def project_kernel(size: int) -> torch.Tensor:
    """The uniform project kernel ``W_p`` of Gao et al.: ``1 / (size^2 - 1)`` off the centre, 0 at the centre.
    Returns ``(size, size)`` float64."""
    w = torch.full((size, size), 1.0 / (size * size - 1), dtype=torch.float64)
    w[size // 2, size // 2] = 0.0
    return w


def spread(noise: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``W_p * noise`` for ``noise`` ``(N, C, H, W)``: each channel convolved with ``kernel`` ``(k, k)`` (zero
    padding, same size)."""
    c = noise.shape[1]
    w = kernel.to(dtype=noise.dtype, device=noise.device).expand(c, 1, *kernel.shape)
    return F.conv2d(noise, w, padding=kernel.shape[-1] // 2, groups=c)


@register_part
@dataclass(frozen=True)
class PatchWise(Part):
    """PI-FGSM (Gao et al. 2020): steps amplified by ``pi_beta`` (10); the accumulated noise beyond eps is cut and
    spread over each pixel's neighbours by a ``pi_kernel`` (3) uniform kernel, with the project factor ``pi_gamma``
    (``None``: ``pi_beta * alpha``, the paper's; ``pi_variant="code"``: TransferAttack's fixed 16/255). L-inf only.
    """

    token: ClassVar[str] = "pi"
    hook: ClassVar[str] = "base"
    paper: ClassVar[str] = "Gao et al. 2020"
    aliases: ClassVar[dict[str, str]] = {"amplification_factor": "pi_beta", "project_factor": "pi_gamma",
                                         "kern_size": "pi_kernel"}
    norms: ClassVar[tuple[str, ...]] = ("linf",)

    pi_beta: float = 10.0
    pi_kernel: int = 3
    pi_gamma: float | None = None
    pi_variant: str = "paper"

    def check(self) -> None:
        check_number("pi_beta (PI's amplification factor beta)", self.pi_beta, lo=0.0, lo_open=True)
        check_number("pi_kernel (PI's project kernel size)", self.pi_kernel, lo=3, integer=True)
        if self.pi_kernel % 2 == 0:
            raise ValueError(f"pi_kernel (PI's project kernel size) must be an odd integer >= 3, got {self.pi_kernel}")
        check_choice("pi_variant", self.pi_variant, VARIANTS)
        if self.pi_gamma is not None:
            check_number("pi_gamma (PI's project factor, in pixel units)", self.pi_gamma, lo=0.0)
            if self.pi_variant == "code":
                raise ValueError("pi_gamma and pi_variant='code' (gamma 16/255) both set PI's project factor; give one")

    def gamma(self, alpha: float) -> float:
        """The project factor in pixel units for the step ``alpha``."""
        if self.pi_gamma is not None:
            return float(self.pi_gamma)
        return CODE_GAMMA if self.pi_variant == "code" else self.pi_beta * alpha

    def start(self, ctx: Context) -> torch.Tensor:
        ctx.state["pi_amplification"] = torch.zeros_like(ctx.x)
        ctx.state["pi_kernel"] = project_kernel(self.pi_kernel)
        return ctx.x.clone()

    def step(self, x_adv: torch.Tensor, direction: torch.Tensor, ctx: Context) -> torch.Tensor:
        amplified = self.pi_beta * ctx.alpha * direction.sign()
        a = ctx.state["pi_amplification"] + amplified
        cut = (a.abs() - ctx.eps).clamp_min(0.0) * a.sign()
        projection = self.gamma(ctx.alpha) * spread(cut, ctx.state["pi_kernel"]).sign()
        ctx.state["pi_amplification"] = a + projection
        return project(x_adv + amplified + projection, ctx.x, ctx.eps, "linf")
