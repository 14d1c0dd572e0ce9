"""Universal adversarial perturbations on disk: ``NAME.safetensors`` (one tensor, ``perturbation``, ``(C, H, W)``)
beside a ``NAME.json`` card (``kind: "universal"``, input shape, eps, norm, source, data, fooling rates, the
command that reproduces it, the file's SHA-256). Loading checks the hash first and never unpickles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from advkit.models.checkpoint import (
    CheckpointError,
    _refuse_pickle,
    resolve_shipped,
    shipped_names,
    verify_hash,
    write_with_card,
)

__all__ = ["UNIVERSAL_DIR", "load_universal", "save_universal", "shipped_universal", "universal_path"]

UNIVERSAL_DIR = Path(__file__).resolve().parent / "weights" / "universal"

FIELDS = ("kind", "input_shape", "eps", "norm", "sha256")


def shipped_universal() -> list[str]:
    """Names of the universal perturbations shipped in the zoo (``DATASET-SOURCE``), sorted."""
    return shipped_names(UNIVERSAL_DIR)


def universal_path(spec: str) -> Path:
    """The file of ``spec``: a ``.safetensors`` path, or a shipped perturbation's name."""
    return resolve_shipped(spec, UNIVERSAL_DIR, "universal perturbation", "advkit train-uap")


def save_universal(v: torch.Tensor, path: str | Path, card: dict[str, Any]) -> Path:
    """Write the perturbation and its card atomically; the card gets the SHA-256 and the input shape."""
    return write_with_card({"perturbation": v.float()}, path,
                           {**card, "kind": "universal", "input_shape": list(v.shape)})


def load_universal(path: str | Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """The perturbation ``(C, H, W)`` and its card.

    Raises:
        CheckpointError: no file, a pickle, no card or an incomplete one, or a hash that does not match.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such universal perturbation file")
    _refuse_pickle(path)
    card_path = path.with_suffix(".json")
    if not card_path.is_file():
        raise CheckpointError(f"{path}: no card at {card_path}; advkit needs it for the eps, norm and hash. "
                              f"Recompute with `advkit train-uap` or copy the card that came with it")
    card: dict[str, Any] = json.loads(card_path.read_text())
    missing = [k for k in FIELDS if k not in card]
    if missing or card.get("kind") != "universal":
        raise CheckpointError(f"{card_path}: not a universal-perturbation card (lacks {', '.join(missing) or 'kind'})")
    verify_hash(path, card)
    v = load_file(str(path)).get("perturbation")
    if v is None or list(v.shape) != list(card["input_shape"]):
        raise CheckpointError(f"{path}: holds no 'perturbation' tensor of shape {card['input_shape']}")
    return v, card
