"""Checkpoints: weights in safetensors next to a JSON model card. Nothing is ever unpickled.

``NAME.safetensors`` holds the network's state dict; ``NAME.json`` holds the card: architecture, dataset, input
shape, mean/std, training recipe, seed, epochs, test accuracy, the SHA-256 of the weights file, the advkit
version and the command that reproduces it. Loading checks the hash before reading a single tensor.

Generators and universal perturbations also keep the card fields that decide an attack's budget and input shape
(``eps``, ``norm``, ``input_shape``...) in the safetensors metadata, which the card's SHA-256 covers: a card whose
``eps`` was edited no longer matches its weights file (:func:`check_protected`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from advkit._files import atomic_path, atomic_write_bytes
from advkit.data.download import sha256_of
from advkit.models.registry import get_arch
from advkit.models.wrapper import Classifier

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".tar")
PROTECTED_KEY = "advkit"  # the one safetensors metadata entry holding a card's protected fields, as sorted JSON
_UNPROTECTED_WARNED: set[str] = set()  # files from an older advkit, warned about once per process


def tensor_digest(model: nn.Module) -> str:
    """SHA-256 over a model's tensors (a :class:`Classifier`'s network; sorted names, dtype, shape, bytes): equal
    for bitwise-equal weights.

    The file's SHA-256 in the card is not: safetensors writes its metadata entries in a per-process order.
    """
    h = hashlib.sha256()
    for k, v in sorted(getattr(model, "net", model).state_dict().items()):
        t = v.detach().contiguous().cpu()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class CheckpointError(ValueError):
    """A checkpoint is missing, refused (pickle), corrupt or does not match its card."""


def save_checkpoint(model: Classifier, path: str | Path, card: dict[str, Any]) -> Path:
    """Write ``model.net``'s weights to ``path`` (``.safetensors``) and the card to the ``.json`` beside it.

    Both files are written atomically (temporary file, then rename); the card records the weights' SHA-256.

    Returns:
        The path of the weights file.
    """
    return write_with_card(model.net.state_dict(), path, card)


def write_with_card(tensors: dict[str, torch.Tensor], path: str | Path, card: dict[str, Any], *,
                    protect: Sequence[str] = ()) -> Path:
    """Write ``tensors`` to ``path`` (``.safetensors``) and ``card`` plus the file's SHA-256 and name to the
    ``.json`` beside it, both atomically (temporary file, then rename). Shared by every advkit file format.

    Args:
        protect: card fields also kept in the weights file's metadata, so that the card's SHA-256 covers them
            (:func:`check_protected` compares them on loading).
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: advkit writes weights as .safetensors files")
    missing = [k for k in protect if k not in card]
    if missing:
        raise CheckpointError(f"{path}: the card lacks {', '.join(missing)}, which the weights file must record")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    # one metadata key only: safetensors writes metadata in a per-process order, so several keys would make the
    # file's SHA-256 differ between identical trainings
    metadata = ({PROTECTED_KEY: json.dumps({k: card[k] for k in protect}, sort_keys=True)} if protect
                else {"format": "pt"})
    with atomic_path(path) as tmp:  # 0644: checkpoints are meant to be shared
        save_file(state, str(tmp), metadata=metadata)
        digest = sha256_of(tmp)
    full = {**card, "sha256": digest, "weights": path.name}
    atomic_write_bytes(path.with_suffix(".json"), (json.dumps(full, indent=2, sort_keys=True) + "\n").encode())
    return path


def verify_hash(path: Path, card: dict[str, Any]) -> None:
    """``CheckpointError`` unless the file's SHA-256 is the card's."""
    got = sha256_of(path)
    if got != card["sha256"]:
        raise CheckpointError(
            f"{path}: SHA-256 {got} does not match the card's {card['sha256']}; the file was modified or "
            f"corrupted. Restore it or recompute it (the card's 'command' field reproduces it)."
        )


def check_protected(path: Path, card: dict[str, Any], fields: Sequence[str]) -> None:
    """Compare the card's ``fields`` with those recorded in the weights file's metadata (written by
    :func:`write_with_card` with ``protect``; the card's SHA-256 covers them).

    A file written before advkit recorded them (no metadata entry) is accepted with a logged warning (once per
    file and process): its card cannot be checked, and refusing it would break every artefact trained by an older
    advkit (and the runs that reuse them); rewriting it with the current advkit protects it.

    Raises:
        CheckpointError: a field differs (naming the field and both values), or the file's header is unreadable.
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    raw = meta.get(PROTECTED_KEY)
    if raw is None:
        if str(path) in _UNPROTECTED_WARNED:
            return
        _UNPROTECTED_WARNED.add(str(path))
        log.warning("%s: written by an older advkit that did not record %s in the weights file, so the card's values "
                    "(%s) cannot be checked against the hash; retrain it with the card's command to protect them",
                    path, ", ".join(fields), ", ".join(f"{k} {card.get(k)!r}" for k in fields))
        return
    try:
        recorded = json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: its metadata entry {PROTECTED_KEY!r} is not valid JSON ({e})") from e
    for k in fields:
        if k in recorded and json.loads(json.dumps(card.get(k))) != recorded[k]:
            raise CheckpointError(
                f"{path.with_suffix('.json')}: the card's {k} is {card.get(k)!r} but the weights file {path.name} "
                f"records {recorded[k]!r} (covered by its SHA-256): the card was edited. Restore {k} "
                f"{recorded[k]!r} in the card" + ("; to attack with another budget, give it at attack time "
                                                   "(--eps), not in the card" if k == "eps" else ""))


def describe_card(card: dict[str, Any]) -> tuple[str, str] | None:
    """What an advkit card describes and how it is used: ``(what, use)`` with ``{path}`` in ``use``, or ``None``
    for a card advkit does not recognise."""
    kind = card.get("kind")
    if kind == "generator":
        return "a perturbation generator (advkit train-generator)", "attack with generator:{path}"
    if kind == "universal":
        return "a universal perturbation (advkit train-uap)", "attack with uap:{path}"
    if "arch" in card and kind is None:
        return (f"a classifier checkpoint (arch {card['arch']!r})",
                "use it as a model (--model {path}, or --source {path} to train an attack against it)")
    return None


def wrong_kind(path: Path, card: dict[str, Any], want: str) -> CheckpointError | None:
    """The error for a card of another kind than ``want`` (``"generator"``, ``"universal"``, ``"classifier"``),
    naming what the file is and how to use it; ``None`` when it is the wanted kind or unknown."""
    kind = card.get("kind") or ("classifier" if "arch" in card else None)
    found = describe_card(card)
    if kind == want or found is None:
        return None
    wanted = {"generator": "a perturbation generator", "universal": "a universal perturbation",
              "classifier": "a classifier"}[want]
    what, use = found
    return CheckpointError(f"{path}: this is {what}, not {wanted}; {use.format(path=path)}")


def existing_file(path: Path, what: str, command: str) -> None:
    """``CheckpointError`` when ``path`` does not exist or is a folder, saying which (and what the folder holds)."""
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.safetensors"))
        held = f" (it holds {', '.join(inside[:5])}{' ...' if len(inside) > 5 else ''})" if inside else ""
        raise CheckpointError(f"{path}: a folder, not a {what} file{held}; give the .safetensors file written by "
                              f"`{command}`")
    if not path.exists():
        raise CheckpointError(f"{path}: no such file; give the .safetensors file written by `{command}`")


def shipped_names(folder: Path) -> list[str]:
    """Stems of the ``.safetensors`` files shipped in ``folder``, sorted."""
    return sorted(p.stem for p in folder.glob("*.safetensors"))


def resolve_shipped(spec: str, folder: Path, what: str, command: str) -> Path:
    """``spec`` as a path (it has a ``.safetensors`` suffix, a ``/`` or exists), else the shipped file of that name
    in ``folder``; ``CheckpointError`` listing the shipped ones otherwise."""
    path = Path(spec)
    shipped = folder / f"{spec}.safetensors"
    if path.suffix == ".safetensors" or "/" in spec or path.is_file() or (path.is_dir() and not shipped.is_file()):
        existing_file(path, what, command)  # a missing file or a folder is named as such
        return path
    if shipped.is_file():
        return shipped
    raise CheckpointError(f"no {what} {spec!r}: no such file here and no shipped {what} of that name; give the path "
                          f"of a .safetensors file written by `{command}`, or a shipped one "
                          f"({', '.join(shipped_names(folder)) or 'none'})")


def _refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: refusing to load a '{path.suffix}' file. PyTorch pickle checkpoints can run arbitrary code "
            f"when unpickled, so advkit loads safetensors only. Convert a state dict once with `advkit models "
            f"import {path} --arch ARCH --dataset DATASET --out DIR` (it reads tensors only, through "
            f"torch.load(weights_only=True), and writes .safetensors with a model card)."
        )
    with open(path, "rb") as f:
        head = f.read(9)
    if head[8:9] == b"{":  # safetensors: an 8-byte header length, then the JSON header (its length may start 0x80)
        return
    if head[:2] == b"PK" or head[:1] == b"\x80":
        raise CheckpointError(
            f"{path}: this file is a pickle or a zip archive (a torch.save checkpoint), not safetensors; advkit "
            f"never unpickles. Convert it with `advkit models import {path} --arch ARCH --dataset DATASET --out DIR`."
        )


def read_card_of_kind(path: Path, card_path: Path, kind: str) -> dict[str, Any]:
    """The JSON card ``card_path`` of the artefact ``path``, which must be a mapping describing a ``kind``
    (``"classifier"``, ``"generator"``, ``"universal"``): ``CheckpointError`` for text that is not JSON, JSON that
    is not a mapping, and a card of another kind (naming what the file is and how to use it)."""
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{card_path}: not valid JSON ({e})") from e
    if not isinstance(card, dict):
        raise CheckpointError(f"{card_path}: a card is a JSON mapping, this file holds a {type(card).__name__}")
    other = wrong_kind(path, card, kind)
    if other is not None:
        raise other
    return card


def read_artefact_card(path: Path, kind: str, fields: Sequence[str], protected: Sequence[str], what: str,
                       command: str) -> dict[str, Any]:
    """The card of a generator or universal perturbation (``kind``) at ``path``, checked: the file exists and is no
    pickle, the card is there, of that kind, has every one of ``fields``, and its ``protected`` fields match those
    recorded in the weights file (:func:`check_protected`). The weights' hash is the loader's to check.

    Raises:
        CheckpointError: naming what is wrong (``what`` names the artefact, ``command`` the one that writes it).
    """
    existing_file(path, what, command)
    _refuse_pickle(path)
    card_path = path.with_suffix(".json")
    if not card_path.is_file():
        raise CheckpointError(f"{path}: no card at {card_path}; with no {what} card advkit cannot know the "
                              f"{', '.join(p for p in protected if p != 'kind')} or check the weights' hash. Rerun "
                              f"`{command}` or copy the card that came with the weights")
    card = read_card_of_kind(path, card_path, kind)
    missing = [k for k in fields if k not in card]
    if missing or card.get("kind") != kind:
        raise CheckpointError(f"{card_path}: not a complete {what} card (lacks {', '.join(missing) or 'kind'})")
    check_protected(path, card, protected)
    return card


def read_card(path: str | Path) -> dict[str, Any]:
    """Read the JSON model card next to a ``.safetensors`` file."""
    path = Path(path)
    card_path = path.with_suffix(".json")
    if not card_path.is_file():
        raise CheckpointError(
            f"{path}: no model card at {card_path}. advkit needs the card to know the architecture and "
            f"preprocessing; write one with `advkit train` or copy the card that came with the weights."
        )
    card = read_card_of_kind(path, card_path, "classifier")
    for key in ("arch", "input_shape", "num_classes", "mean", "std", "sha256"):
        if key not in card:
            raise CheckpointError(f"{card_path}: model card lacks the field {key!r}")
    _check_card_fields(card_path, card)
    return card


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_card_fields(card_path: Path, card: dict[str, Any]) -> None:
    """``CheckpointError`` naming the field when a card's field has the wrong form (a hand-edited card)."""
    def bad(key: str, want: str) -> CheckpointError:
        return CheckpointError(f"{card_path}: model card field {key!r} must be {want}, got {card[key]!r}; restore "
                               f"the card that came with the weights")

    shape = card["input_shape"]
    if not isinstance(shape, list) or len(shape) != 3 or not all(_is_int(v) and v > 0 for v in shape):
        raise bad("input_shape", "[channels, height, width] (three positive integers)")
    if not _is_int(card["num_classes"]) or card["num_classes"] < 2:
        raise bad("num_classes", "an integer >= 2")
    for key in ("mean", "std"):
        v = card[key]
        if (not isinstance(v, list) or len(v) not in (1, shape[0])
                or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in v)):
            raise bad(key, f"a list of 1 or {shape[0]} numbers (one per channel)")
    if any(a <= 0 for a in card["std"]):
        raise bad("std", "positive numbers")
    if not isinstance(card["arch"], str):
        raise bad("arch", "an architecture name (advkit models archs)")
    if not isinstance(card["sha256"], str):
        raise bad("sha256", "the weights file's SHA-256 as 64 hex digits")


def load_checkpoint(path: str | Path, *, verify: bool = True) -> Classifier:
    """Load a checkpoint written by :func:`save_checkpoint` as a frozen, eval-mode :class:`Classifier`.

    Raises:
        CheckpointError: the file is a pickle or any non-safetensors format, the card is missing or incomplete,
            the weights' SHA-256 does not match the card, or the tensors do not fit the architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: a folder, not a checkpoint file" if path.is_dir() else
                              f"{path}: no such checkpoint file")
    _refuse_pickle(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: expected a .safetensors file, got '{path.suffix}'")
    card = read_card(path)
    if verify:
        verify_hash(path, card)
    c, h, w = card["input_shape"]
    net = get_arch(card["arch"]).build(c, card["num_classes"], h)
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit architecture {card['arch']!r}: {e}") from e
    name = card.get("name") or path.stem
    model = Classifier(net, card["mean"], card["std"], (c, h, w), card["num_classes"], name=name, card=card)
    return model.freeze()
