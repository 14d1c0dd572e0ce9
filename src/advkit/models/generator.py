"""Perturbation generators (Naseer et al., NeurIPS 2019; Poursaeed et al., CVPR 2018): a network that maps an image
to an adversarial image in one forward pass, and its checkpoint format.

The architecture is the ResNet generator both papers use (after Johnson et al. 2016): a 7x7 reflection-padded
convolution, two stride-2 downsampling convolutions, ``blocks`` residual blocks (two 3x3 convolutions with
dropout 0.5 between them), two transposed-convolution upsamplings and a 7x7 convolution back to the image's
channels, squashed to ``[0, 1]`` by ``(tanh + 1) / 2``. The raw output is an unconstrained image; the attack
projects it onto the L-inf ball of ``eps`` around the input (:func:`project_linf`). Naseer et al. use ``ngf = 64``
and 6 blocks on ImageNet; the 28 px datasets here use ``ngf = 16`` by default (a checkpoint of about 2 MB).
AdvGAN generators (Xiao et al., IJCAI 2018; ``advkit train-generator --loss advgan``) are the same network,
trained with a discriminator, and are saved and loaded the same way.

Checkpoints are ``NAME.safetensors`` plus the ``NAME.json`` card (``kind: "generator"``, input shape, ``ngf``,
blocks, eps, loss, sources, data, epochs, seed, the command that reproduces it, the weights' SHA-256); loading
checks the hash first and never unpickles. The fields that decide the attack's budget and input shape
(:data:`PROTECTED`) are also kept in the weights file's metadata, so an edited card is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from advkit.models.checkpoint import (
    CheckpointError,
    read_artefact_card,
    resolve_shipped,
    shipped_names,
    verify_hash,
    write_with_card,
)

__all__ = ["GENERATOR_DIR", "PerturbationGenerator", "generator_path", "load_generator", "project_linf",
           "read_generator_card", "save_generator", "shipped_generators"]

GENERATOR_DIR = Path(__file__).resolve().parent / "weights" / "generators"

CARD_FIELDS = ("kind", "input_shape", "ngf", "blocks", "eps", "sha256")
PROTECTED = ("kind", "input_shape", "ngf", "blocks", "eps")  # also in the weights' metadata, under their hash


class _Block(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=False), nn.BatchNorm2d(ch), nn.ReLU(True),
            nn.Dropout(0.5),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=False), nn.BatchNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PerturbationGenerator(nn.Module):
    """The ResNet generator: ``(N, C, H, W)`` pixels in ``[0, 1]`` to an unconstrained image in ``[0, 1]``.

    Args:
        channels: image channels (1 for the MNISTs, 3 for colour).
        ngf: filters of the first convolution (doubled by each downsampling).
        blocks: residual blocks at the lowest resolution.
        size: image side (``H == W``), divisible by 4.
    """

    def __init__(self, channels: int = 1, ngf: int = 16, blocks: int = 6, size: int = 28) -> None:
        super().__init__()
        if size % 4:
            raise ValueError(f"the generator downsamples twice by 2: the image side must be divisible by 4, got "
                             f"{size}")
        self.input_shape = (channels, size, size)
        self.ngf, self.blocks = ngf, blocks
        self.net = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(channels, ngf, 7, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.Conv2d(ngf, 2 * ngf, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * ngf), nn.ReLU(True),
            nn.Conv2d(2 * ngf, 4 * ngf, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(4 * ngf), nn.ReLU(True),
            *[_Block(4 * ngf) for _ in range(blocks)],
            nn.ConvTranspose2d(4 * ngf, 2 * ngf, 3, stride=2, padding=1, output_padding=1, bias=False),
            nn.BatchNorm2d(2 * ngf), nn.ReLU(True),
            nn.ConvTranspose2d(2 * ngf, ngf, 3, stride=2, padding=1, output_padding=1, bias=False),
            nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ReflectionPad2d(3), nn.Conv2d(ngf, channels, 7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            c, h, w = self.input_shape
            raise ValueError(f"this generator was trained on {c}x{h}x{w} images, got {'x'.join(map(str, x.shape[1:]))}"
                             f"; train one for these images (advkit train-generator) or resize them to {h}x{w}")
        return (torch.tanh(self.net(x)) + 1) / 2


def project_linf(raw: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """The generator's output projected onto the L-inf ball of ``eps`` around ``x`` and onto ``[0, 1]``."""
    return torch.min(torch.max(raw, x - eps), x + eps).clamp(0.0, 1.0)


def shipped_generators() -> list[str]:
    """Names of the generators shipped in the zoo (``DATASET-SOURCE``), sorted."""
    return shipped_names(GENERATOR_DIR)


def generator_path(spec: str) -> Path:
    """The weights file of ``spec``: a path to a ``.safetensors`` file, or a shipped generator's name."""
    return resolve_shipped(spec, GENERATOR_DIR, "generator", "advkit train-generator")


def save_generator(gen: PerturbationGenerator, path: str | Path, card: dict[str, Any]) -> Path:
    """Write the weights (``.safetensors``) and the card (``.json``) atomically; the card gets the SHA-256."""
    return write_with_card(gen.state_dict(), path, {**card, "kind": "generator", "input_shape": list(gen.input_shape),
                                                    "ngf": gen.ngf, "blocks": gen.blocks}, protect=PROTECTED)


def read_generator_card(path: str | Path) -> dict[str, Any]:
    """The card beside a generator's weights, its :data:`PROTECTED` fields checked against the weights file's
    metadata (the file's header only; :func:`load_generator` also checks the hash).

    Raises:
        CheckpointError: no such file, a folder, no card, a card of another kind (a universal perturbation, a
            classifier: named), a missing field, or a protected field that differs from the weights file's.
    """
    return read_artefact_card(Path(path), "generator", CARD_FIELDS, PROTECTED, "generator", "advkit train-generator")


def load_generator(path: str | Path) -> tuple[PerturbationGenerator, dict[str, Any]]:
    """Load a generator written by :func:`save_generator`, frozen and in eval mode, with its card.

    Raises:
        CheckpointError: no file, a pickle, no card (or another kind's, or an edited one: see
            :func:`read_generator_card`), a hash that does not match the card, or weights that do not fit the
            card's architecture.
    """
    path = Path(path)
    card = read_generator_card(path)
    verify_hash(path, card)
    c, h, w = card["input_shape"]
    gen = PerturbationGenerator(c, int(card["ngf"]), int(card["blocks"]), h)
    try:
        gen.load_state_dict(load_file(str(path)), strict=True)
    except Exception as e:  # safetensors' own errors, or a shape mismatch
        raise CheckpointError(f"{path}: weights do not fit the card's generator (ngf {card['ngf']}, "
                              f"{card['blocks']} blocks): {e}") from e
    gen.eval()
    for p in gen.parameters():
        p.requires_grad_(False)
    return gen, card
