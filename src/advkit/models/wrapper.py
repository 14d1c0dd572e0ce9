"""The classifier every attack sees: pixels in ``[0, 1]`` in, logits out, normalisation inside.

Following foolbox's ``PyTorchModel(bounds=(0, 1), preprocessing=...)`` and the SGM authors'
``nn.Sequential(Normalize(mean, std), net)``: preprocessing lives in the model, never in an attack.
:class:`Preprocess` (a differentiable :class:`Resize` to the crop size, then :class:`Normalize`) is the
preprocessing of the torchvision / timm adapters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with ``mean`` and ``std`` as buffers (they move with ``.to()``)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    mean: torch.Tensor
    std: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """A network with its preprocessing: ``logits = net(preprocess(x))`` for ``x`` in ``[0, 1]``, ``(N, C, H, W)``.

    Attributes:
        preprocess: normalisation (and, for adapters, resizing) applied to pixel inputs.
        net: the network proper, taking preprocessed inputs.
        input_shape: ``(C, H, W)`` of the pixel inputs it expects.
        num_classes: number of logits.
        name: a label for reports.
        card: the model card (architecture, dataset, recipe, accuracy, ...) when loaded from a checkpoint.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float],
                 input_shape: tuple[int, int, int], num_classes: int, name: str = "model",
                 card: dict[str, Any] | None = None, preprocess: nn.Module | None = None) -> None:
        super().__init__()
        self.preprocess = preprocess if preprocess is not None else Normalize(mean, std)
        self.net = net
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.name = name
        self.card = dict(card or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(x))

    def freeze(self) -> Classifier:
        """Eval mode and ``requires_grad=False`` on every parameter; returns ``self``."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_shape={self.input_shape}, num_classes={self.num_classes}"


def check_input_shape(model: object, shape: tuple[int, ...] | torch.Size, data: str = "the data") -> None:
    """``ValueError`` naming both shapes and what to change when ``model`` (a :class:`Classifier`, or any module
    with an ``input_shape``) expects images of another shape than ``shape`` (``(C, H, W)``); a model without a
    stated shape passes. Called before any work, so that a grey folder on an RGB model never reaches the forward
    pass."""
    want = getattr(model, "input_shape", None)
    if want is None or tuple(shape) == tuple(want):
        return
    got, need = tuple(int(v) for v in shape), tuple(int(v) for v in want)
    name = getattr(model, "name", None) or type(model).__name__
    hint = []
    if got[0] != need[0]:
        hint.append(f"{'colour' if need[0] == 3 else 'grey'} images ({need[0]} channel(s)): use a dataset of that "
                    f"kind, or an image folder loaded with the model's channel count")
    if got[1:] != need[1:]:
        hint.append(f"{need[1]}x{need[2]} pixels: resize the images (an image folder's `size` option) or use a "
                    f"model trained at {got[1]}x{got[2]}")
    raise ValueError(f"model {name} expects {'x'.join(map(str, need))} images (its card's input_shape), but "
                     f"{data} is {'x'.join(map(str, got))}; it needs " + "; ".join(hint))


class Resize(nn.Module):
    """Resize ``(N, C, H, W)`` images to ``size`` with ``F.interpolate`` (bilinear, no antialiasing).

    Differentiable and deterministic on CPU; inputs already at ``size`` pass through untouched. The aspect ratio is
    not kept (a non-square input is stretched), and without antialiasing a large downscale aliases: feed images
    near the crop size for faithful ImageNet accuracy.

    Args:
        size: target ``(height, width)``.
        mode: ``F.interpolate`` mode.
    """

    def __init__(self, size: tuple[int, int], mode: str = "bilinear") -> None:
        super().__init__()
        self.size = (int(size[0]), int(size[1]))
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == self.size:
            return x
        return F.interpolate(x, size=self.size, mode=self.mode, align_corners=False, antialias=False)

    def extra_repr(self) -> str:
        return f"size={self.size}, mode={self.mode!r}"


class Preprocess(nn.Module):
    """Pixels ``(N, C, H, W)`` in ``[0, 1]`` -> resized to the crop size -> normalised, as the network expects.

    Attributes:
        resize: the :class:`Resize` to the weights' crop size.
        normalize: the per-channel :class:`Normalize`.
        channels: the number of input channels ``C`` it accepts.
    """

    def __init__(self, size: tuple[int, int], mean: Sequence[float], std: Sequence[float],
                 mode: str = "bilinear") -> None:
        super().__init__()
        self.channels = len(mean)
        self.resize = Resize(size, mode)
        self.normalize = Normalize(mean, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected pixels of shape (N, {self.channels}, H, W), got {tuple(x.shape)}")
        return self.normalize(self.resize(x))
