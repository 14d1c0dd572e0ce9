"""The classifier every attack sees: pixels in ``[0, 1]`` in, logits out, normalisation inside.

Following foolbox's ``PyTorchModel(bounds=(0, 1), preprocessing=...)`` and the SGM authors'
``nn.Sequential(Normalize(mean, std), net)``: preprocessing lives in the model, never in an attack.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
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
