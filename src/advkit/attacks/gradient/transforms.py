"""Parts of the iterative engine: input diversity (DI), translation-invariant smoothing (TI), momentum (MI) and
the step rules.

Each is a small pure function of tensors so that a new attack is a new composition, not a new loop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def input_diversity(x: torch.Tensor, prob: float, resize_rate: float, generator: torch.Generator) -> torch.Tensor:
    """Diverse inputs (Xie et al., CVPR 2019, "Improving Transferability of Adversarial Examples with Input
    Diversity").

    With probability ``prob`` (one draw per batch, as in the authors' code) the batch ``(N, C, H, W)`` is resized
    (nearest neighbour) to a random side ``rnd`` in ``[H, floor(H * resize_rate))`` and zero-padded at a random
    offset to ``floor(H * resize_rate)``; the authors feed that larger image to the network (330 px for 299 px
    Inception inputs). advkit resizes it back to ``H x W`` (bilinear) so models with a fixed input size work too,
    as TransferAttack does. Differentiable in ``x``.
    """
    if torch.rand((), generator=generator).item() >= prob:
        return x
    h, w = x.shape[-2:]
    big = max(int(h * resize_rate), h + 1)
    big_w = max(int(w * resize_rate), w + 1)
    rnd = int(torch.randint(h, big, (), generator=generator))
    rnd_w = int(round(rnd * w / h))
    rnd_w = min(max(rnd_w, w), big_w - 1)
    resized = F.interpolate(x, size=(rnd, rnd_w), mode="nearest")
    pad_top = int(torch.randint(0, big - rnd + 1, (), generator=generator))
    pad_left = int(torch.randint(0, big_w - rnd_w + 1, (), generator=generator))
    padded = F.pad(resized, (pad_left, big_w - rnd_w - pad_left, pad_top, big - rnd - pad_top))
    return F.interpolate(padded, size=(h, w), mode="bilinear", align_corners=False)


def gaussian_kernel(kernel_size: int, nsig: float) -> torch.Tensor:
    """The TI kernel of Dong et al., CVPR 2019: a ``kernel_size`` square Gaussian spanning ``[-nsig, nsig]``
    standard deviations (the authors' ``gkern(15, 3)``), normalised to sum 1. Returns ``(k, k)`` float64."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"TI kernel_size must be a positive odd integer, got {kernel_size}")
    if kernel_size == 1:
        return torch.ones(1, 1, dtype=torch.float64)
    t = torch.linspace(-nsig, nsig, kernel_size, dtype=torch.float64)
    k1 = torch.exp(-0.5 * t * t)
    k = torch.outer(k1, k1)
    return k / k.sum()


def smooth_gradient(grad: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Translation-invariant attack (Dong et al. 2019): convolve each channel of ``grad`` ``(N, C, H, W)`` with
    ``kernel`` ``(k, k)`` (zero padding, same size)."""
    c = grad.shape[1]
    k = kernel.to(dtype=grad.dtype, device=grad.device).expand(c, 1, *kernel.shape)
    return F.conv2d(grad, k, padding=kernel.shape[-1] // 2, groups=c)


def l1_normalise(grad: torch.Tensor) -> torch.Tensor:
    """``grad / mean(|grad|)`` per sample: the L1 normalisation of MI-FGSM (Dong et al. 2018) divided by the number
    of features, as the MI and NI authors' code does (``tf.reduce_mean(tf.abs(g))``). For MI the constant changes
    neither the sign nor the relative weight of accumulated terms; for NI it does matter, because the look-ahead
    point moves by ``alpha * mu * g_t``, so the mean (not the sum) is what reproduces NI-FGSM."""
    scale = grad.abs().flatten(1).mean(1).clamp_min(1e-12)
    return grad / scale.view(-1, *([1] * (grad.ndim - 1)))




def random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator) -> torch.Tensor:
    """PGD's random start (Madry et al. 2018): uniform in the L-inf ball, or uniform in the L2 ball (direction
    from a Gaussian, radius ``eps * u^(1/d)``), then clipped to ``[0, 1]``."""
    if norm == "linf":
        noise = (torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1) * eps
    else:
        d = math.prod(x.shape[1:])
        direction = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        radius = torch.rand(x.shape[0], generator=generator, dtype=x.dtype) ** (1.0 / d) * eps
        noise = direction * radius.view(-1, 1, 1, 1)
    return (x + noise.to(x.device)).clamp(0.0, 1.0)
