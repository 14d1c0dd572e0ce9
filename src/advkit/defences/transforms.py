"""The input transformations of four defences, as plain tensor functions on pixels ``(N, C, H, W)`` in ``[0, 1]``.

* :func:`jpeg`: Guo, Rana, Cisse, van der Maaten, ICLR 2018, "Countering Adversarial Images using Input
  Transformations": JPEG compression at quality 75. Each image is rounded to 8 bits, encoded and decoded by PIL
  (grey ``L`` or ``RGB``) and divided by 255. Computed outside autograd.
* :func:`bit_depth`: Xu, Evans, Qi, NDSS 2018, "Feature Squeezing: Detecting Adversarial Examples in Deep Neural
  Networks": ``round(x * (2^bits - 1)) / (2^bits - 1)`` (the authors' code, ``np.rint``); 1 bit for MNIST, 5 for
  CIFAR-10 and ImageNet.
* :func:`median`: feature squeezing's local median smoothing, ``scipy.ndimage.median_filter(x, size=(1, s, s, 1),
  mode="reflect")`` in the authors' code: per channel, an ``s x s`` window (2x2 on MNIST and CIFAR-10, 3x3 on
  ImageNet) whose top-left offset is ``-(s // 2)``, edges padded symmetrically (``d c b a | a b c d``), and for an
  even window the upper of the two middle values (scipy's rank ``s*s // 2``). Built with ``unfold`` and
  ``kthvalue``, so it has the true (selection) gradient.
* :func:`random_resize_pad`: Xie, Wang, Zhang, Ren, Yuille, ICLR 2018, "Mitigating Adversarial Effects Through
  Randomization": resize a ``side x side`` image (nearest neighbour, as the authors' code) to a random
  ``r`` in ``[side, outer)`` with ``outer = round(side * 331 / 299)``, then pad with zeros (the paper's value) to
  ``outer x outer`` at a random offset (``top, left`` uniform in ``[0, outer - r)``, the authors' code's
  ``tf.random_uniform(maxval=rem)``). One draw per call for the whole batch, as the authors' ``defend`` draws
  one per call.

:func:`straight_through` is BPDA's identity backward (Athalye, Carlini, Wagner, ICML 2018, "Obfuscated Gradients
Give a False Sense of Security"): the forward value of the transform, the gradient of the identity.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

XIE_RATIO = 331 / 299  # Xie et al.: 299-pixel inputs resized to [299, 331) and padded to 331


def jpeg(x: torch.Tensor, quality: int = 75) -> torch.Tensor:
    """JPEG round trip of each image at ``quality`` (PIL), 8-bit rounded; 1 (grey) or 3 (RGB) channels.

    Returns a tensor without a gradient graph, on ``x``'s device and dtype.
    """
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"jpeg takes (N, 1, H, W) or (N, 3, H, W) images, got {tuple(x.shape)}")
    pixels = (x.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = []
    for img in pixels:
        buf = io.BytesIO()
        pil = Image.fromarray(img[:, :, 0], mode="L") if img.shape[2] == 1 else Image.fromarray(img, mode="RGB")
        pil.save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        dec = np.asarray(Image.open(buf).convert("L" if img.shape[2] == 1 else "RGB"), dtype=np.float32)
        out.append(dec.reshape(img.shape) / 255.0)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous().to(x.device, x.dtype)


def bit_depth(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``round(x * (2^bits - 1)) / (2^bits - 1)``; ``torch.round``'s gradient is zero."""
    levels = 2 ** int(bits) - 1
    return torch.round(x * levels) / levels


def _symmetric_index(n: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Indices of a length-``n`` axis padded symmetrically (scipy's ``reflect``: ``d c b a | a b c d``)."""
    i = torch.arange(-before, n + after, device=device)
    period = 2 * n
    i = torch.remainder(i, period)
    return torch.where(i >= n, period - 1 - i, i)


def median(x: torch.Tensor, size: int = 2) -> torch.Tensor:
    """Median of each ``size x size`` window per channel, as ``scipy.ndimage.median_filter`` with
    ``size=(1, 1, size, size)`` and ``mode="reflect"`` (see the module docstring). Same shape as ``x``."""
    s = int(size)
    if x.ndim != 4:
        raise ValueError(f"median takes (N, C, H, W) images, got {tuple(x.shape)}")
    n, c, h, w = x.shape
    before, after = s // 2, s - 1 - s // 2
    padded = x.index_select(2, _symmetric_index(h, before, after, x.device))
    padded = padded.index_select(3, _symmetric_index(w, before, after, x.device))
    windows = F.unfold(padded.reshape(n * c, 1, h + s - 1, w + s - 1), kernel_size=s)  # (N*C, s*s, H*W)
    values = windows.kthvalue(s * s // 2 + 1, dim=1).values
    return values.reshape(n, c, h, w)


def outer_side(side: int) -> int:
    """The padded side of Xie et al.'s transform for a ``side``-pixel input: ``round(side * 331 / 299)``."""
    return max(int(round(side * XIE_RATIO)), side + 1)


def random_resize_pad(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Xie et al.'s randomisation: resize (nearest) to ``r ~ U{side, ..., outer - 1}``, zero-pad to ``outer``
    at ``top, left ~ U{0, ..., outer - r - 1}``. Draws three integers from ``generator`` (``r``, ``top``, ``left``, in
    that order). Returns ``(N, C, outer, outer)``, differentiable in ``x``."""
    if x.ndim != 4 or x.shape[2] != x.shape[3]:
        raise ValueError(f"random_resize_pad takes square (N, C, S, S) images, got {tuple(x.shape)}")
    side = int(x.shape[2])
    outer = outer_side(side)
    r = int(torch.randint(side, outer, (1,), generator=generator))
    top = int(torch.randint(0, outer - r, (1,), generator=generator))
    left = int(torch.randint(0, outer - r, (1,), generator=generator))
    resized = F.interpolate(x, size=(r, r), mode="nearest")
    return F.pad(resized, (left, outer - r - left, top, outer - r - top))


class _StraightThrough(torch.autograd.Function):
    """Forward: the transformed value; backward: the identity (BPDA with ``g(x) = x``)."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return value.clone()

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None


def straight_through(x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` in the forward pass, ``d/dx = identity`` in the backward pass (BPDA)."""
    return _StraightThrough.apply(x, value.detach())  # type: ignore[no-any-return]
