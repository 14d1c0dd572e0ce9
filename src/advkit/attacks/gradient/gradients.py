"""Gradient transforms: variance tuning (VMI / VNI) and translation-invariant smoothing (TI).

* ``vt``: Wang & He, "Enhancing the Transferability of Adversarial Attacks through Variance Tuning", CVPR 2021.
  The step uses ``grad + v_t``, and ``v_{t+1} = (1/N) sum_i grad(x_t + r_i) - grad`` over ``N = 20`` neighbours
  ``r_i ~ U[-beta * eps, beta * eps]^d`` (``beta = 1.5``), each gradient with the same input copies as the loop's.
  ``vmi`` is ``mi+vt``, ``vni`` is ``ni+vt`` (for VNI ``grad`` is the look-ahead gradient, as in the common
  implementations).
* ``ti``: Dong et al., CVPR 2019: the gradient convolved with the ``gkern(15, 3)`` Gaussian.

Variance tuning adds its term before TI smooths (order 10 and 20), as the authors combine them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from advkit.attacks.core.checks import check_number
from advkit.attacks.gradient.parts import Context, Part, register_macro, register_part
from advkit.attacks.gradient.transforms import gaussian_kernel, smooth_gradient


@register_part
@dataclass(frozen=True)
class VarianceTuning(Part):
    """Variance tuning (Wang & He 2021): ``vt_neighbours`` (20) gradients at uniform neighbours within
    ``vt_beta * eps`` (1.5) of the iterate tune the next step."""

    token: ClassVar[str] = "vt"
    hook: ClassVar[str] = "gradient"
    order: ClassVar[int] = 10
    paper: ClassVar[str] = "Wang & He 2021"
    aliases: ClassVar[dict[str, str]] = {"beta": "vt_beta", "neighbours": "vt_neighbours", "n": "vt_neighbours"}

    vt_neighbours: int = 20
    vt_beta: float = 1.5

    def check(self) -> None:
        check_number("vt_neighbours (VT's number of neighbours N)", self.vt_neighbours, lo=1, integer=True)
        check_number("vt_beta (VT's neighbourhood radius in units of eps)", self.vt_beta, lo=0.0, lo_open=True)

    def transform(self, grad: torch.Tensor, point: torch.Tensor, ctx: Context) -> torch.Tensor:
        v = ctx.state.get("variance")
        tuned = grad if v is None else grad + v
        radius = self.vt_beta * ctx.eps
        total = torch.zeros_like(grad)
        for _ in range(self.vt_neighbours):
            r = (torch.rand(point.shape, generator=ctx.generator, dtype=point.dtype) * 2 - 1).to(point.device)
            total += ctx.gradient(point.detach() + radius * r)
        ctx.state["variance"] = total / self.vt_neighbours - grad
        return tuned


register_macro("vmi", ("mi", "vt"))
register_macro("vni", ("ni", "vt"))


@register_part
@dataclass(frozen=True)
class TranslationInvariance(Part):
    """TI (Dong et al. 2019): convolve the gradient with a ``ti_kernel`` (15) square Gaussian spanning
    ``ti_nsig`` (3) standard deviations; use ``ti_kernel=5`` on 28 px images."""

    token: ClassVar[str] = "ti"
    hook: ClassVar[str] = "gradient"
    order: ClassVar[int] = 20
    paper: ClassVar[str] = "Dong et al. 2019"
    aliases: ClassVar[dict[str, str]] = {"kernel_size": "ti_kernel", "nsig": "ti_nsig"}

    ti_kernel: int = 15
    ti_nsig: float = 3.0

    def check(self) -> None:
        check_number("ti_kernel (TI's kernel size)", self.ti_kernel, lo=1, integer=True)
        check_number("ti_nsig (TI's kernel span in standard deviations)", self.ti_nsig, lo=0.0, lo_open=True)
        gaussian_kernel(self.ti_kernel, self.ti_nsig)

    def transform(self, grad: torch.Tensor, point: torch.Tensor, ctx: Context) -> torch.Tensor:
        kernel = ctx.state.get("ti_kernel")
        if kernel is None:
            kernel = ctx.state["ti_kernel"] = gaussian_kernel(self.ti_kernel, self.ti_nsig)
        return smooth_gradient(grad, kernel)
