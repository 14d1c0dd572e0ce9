"""Universal adversarial perturbations on disk: ``NAME.safetensors`` (one tensor, ``perturbation``, ``(C, H, W)``)
beside a ``NAME.json`` card (``kind: "universal"``, input shape, eps, norm, source, data, fooling rates, the
command that reproduces it, the file's SHA-256). Loading checks the hash first and never unpickles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from advkit._files import atomic_path, atomic_write_bytes
from advkit.data.download import sha256_of
from advkit.models.checkpoint import CheckpointError, _refuse_pickle

__all__ = ["UNIVERSAL_DIR", "load_universal", "save_universal", "shipped_universal", "universal_path"]

UNIVERSAL_DIR = Path(__file__).resolve().parent / "weights" / "universal"

FIELDS = ("kind", "input_shape", "eps", "norm", "sha256")


def shipped_universal() -> list[str]:
    """Names of the universal perturbations shipped in the zoo (``DATASET-SOURCE``), sorted."""
    return sorted(p.stem for p in UNIVERSAL_DIR.glob("*.safetensors"))


def universal_path(spec: str) -> Path:
    """The file of ``spec``: a ``.safetensors`` path, or a shipped perturbation's name (``CheckpointError``
    listing the shipped ones otherwise)."""
    path = Path(spec)
    if path.suffix == ".safetensors" or path.is_file() or "/" in spec:
        return path
    shipped = UNIVERSAL_DIR / f"{spec}.safetensors"
    if shipped.is_file():
        return shipped
    raise CheckpointError(f"no universal perturbation {spec!r}: give the path of a .safetensors file written by "
                          f"`advkit train-uap`, or a shipped one ({', '.join(shipped_universal()) or 'none'})")


def save_universal(v: torch.Tensor, path: str | Path, card: dict[str, Any]) -> Path:
    """Write the perturbation and its card atomically; the card gets the SHA-256 and the input shape."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: universal perturbations are written as .safetensors files")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({"perturbation": v.detach().float().contiguous().cpu()}, str(tmp), metadata={"format": "pt"})
        digest = sha256_of(tmp)
    full = {**card, "kind": "universal", "input_shape": list(v.shape), "sha256": digest, "weights": path.name}
    atomic_write_bytes(path.with_suffix(".json"), (json.dumps(full, indent=2, sort_keys=True) + "\n").encode())
    return path


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
    got = sha256_of(path)
    if got != card["sha256"]:
        raise CheckpointError(f"{path}: SHA-256 {got} does not match the card's {card['sha256']}; the file was "
                              f"modified or corrupted. Recompute it (the card's 'command' field reproduces it)")
    v = load_file(str(path)).get("perturbation")
    if v is None or list(v.shape) != list(card["input_shape"]):
        raise CheckpointError(f"{path}: holds no 'perturbation' tensor of shape {card['input_shape']}")
    return v, card
