"""Rewrite generator and universal-perturbation files so that their weights file records the card fields that decide
the attack's budget and input shape (``eps``, ``norm``, ``input_shape``...) in its safetensors metadata, under the
card's SHA-256. The tensors are copied bit for bit; only the metadata, and so the card's ``sha256``, change.

The card is trusted as it is: run this only on files whose cards are known to be the originals (the shipped ones,
which are in git). Usage: python scripts/protect_artefact_cards.py [FILE.safetensors ...] (default: every shipped
generator and universal perturbation).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from advkit.models import generator, universal
from advkit.models.checkpoint import verify_hash, write_with_card


def protect(path: Path) -> str:
    """Rewrite ``path`` with its card's protected fields in the metadata; returns the new SHA-256."""
    card = json.loads(path.with_suffix(".json").read_text())
    verify_hash(path, card)  # the weights are the ones the card describes
    fields = {"generator": generator.PROTECTED, "universal": universal.PROTECTED}[card["kind"]]
    tensors = load_file(str(path))
    body = {k: v for k, v in card.items() if k not in ("sha256", "weights")}
    write_with_card(tensors, path, body, protect=fields)
    again = load_file(str(path))
    assert set(again) == set(tensors) and all(torch.equal(again[k], tensors[k]) for k in tensors)
    new: str = json.loads(path.with_suffix(".json").read_text())["sha256"]
    return new


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="*", type=Path)
    args = ap.parse_args()
    files = args.files or sorted([*generator.GENERATOR_DIR.glob("*.safetensors"),
                                  *universal.UNIVERSAL_DIR.glob("*.safetensors")])
    for f in files:
        print(f"{f}: sha256 {protect(f)}")


if __name__ == "__main__":
    main()
