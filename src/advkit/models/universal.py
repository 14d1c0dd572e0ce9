"""Universal adversarial perturbations on disk: ``NAME.safetensors`` (one tensor, ``perturbation``, ``(C, H, W)``)
beside a ``NAME.json`` card (``kind: "universal"``, input shape, eps, norm, source, data, fooling rates, the
command that reproduces it, the file's SHA-256). Loading checks the hash first and never unpickles. The fields that
decide the attack's budget and input shape (:data:`PROTECTED`) are also kept in the file's metadata, so an edited
card is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from advkit.models.checkpoint import (
    CheckpointError,
    read_artefact_card,
    resolve_shipped,
    shipped_names,
    verify_hash,
    write_with_card,
)

__all__ = ["UNIVERSAL_DIR", "load_universal", "save_universal", "shipped_universal", "universal_path"]

UNIVERSAL_DIR = Path(__file__).resolve().parent / "weights" / "universal"

FIELDS = ("kind", "input_shape", "eps", "norm", "sha256")
PROTECTED = ("kind", "input_shape", "eps", "norm")  # also in the file's metadata, under its hash


def shipped_universal() -> list[str]:
    """Names of the universal perturbations shipped in the zoo (``DATASET-SOURCE``), sorted."""
    return shipped_names(UNIVERSAL_DIR)


def universal_path(spec: str) -> Path:
    """The file of ``spec``: a ``.safetensors`` path, or a shipped perturbation's name."""
    return resolve_shipped(spec, UNIVERSAL_DIR, "universal perturbation", "advkit train-uap")


def save_universal(v: torch.Tensor, path: str | Path, card: dict[str, Any]) -> Path:
    """Write the perturbation and its card atomically; the card gets the SHA-256 and the input shape."""
    return write_with_card({"perturbation": v.float()}, path,
                           {**card, "kind": "universal", "input_shape": list(v.shape)}, protect=PROTECTED)


def load_universal(path: str | Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """The perturbation ``(C, H, W)`` and its card.

    Raises:
        CheckpointError: no file, a folder, a pickle, no card, another kind's card (a generator, a classifier:
            named), an incomplete one, a protected field (:data:`PROTECTED`) that differs from the file's
            metadata, or a hash that does not match.
    """
    path = Path(path)
    card = read_artefact_card(path, "universal", FIELDS, PROTECTED, "universal perturbation", "advkit train-uap")
    verify_hash(path, card)
    v = load_file(str(path)).get("perturbation")
    if v is None or list(v.shape) != list(card["input_shape"]):
        raise CheckpointError(f"{path}: holds no 'perturbation' tensor of shape {card['input_shape']}")
    return v, card
