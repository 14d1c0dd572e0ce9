"""Resuming a JSMA study inside one set: the targeted attacks run in pieces, each kept on disk when it finishes.

The paper's protocol attacks 90,000 (sample, target) rows per set, about 40 CPU-minutes; before this module an
interrupted set restarted from zero. :func:`attack_in_pieces` runs the rows in pieces of ``piece`` rows and writes
each finished piece (examples, predictions, success, seconds) to a hidden folder next to the run folder, so a rerun
of the same command attacks only the pieces that are missing. JSMA is deterministic, so the resumed study is the
one an uninterrupted run writes; the folder's ``meta.json`` holds a fingerprint of the model's weights, the attack's
settings and the attacked rows, and a folder left by another model, attack or selection is refused, never mixed in.

Examples are stored as 8-bit pixels where that is exact (theta = +-1 on 8-bit images sets features to the bounds),
else as float32.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from advkit._files import atomic_write_text
from advkit.attacks import Attack, attack_batched

__all__ = ["PIECE", "attack_in_pieces", "fingerprint", "partial_folder"]

PIECE = 4608  # rows per kept piece: 512 samples x 9 targets, about 2 minutes of JSMA on LeNet and 2 cores


def partial_folder(out: str | Path) -> Path:
    """Where the pieces of the run folder ``out`` are kept until the study is saved: ``.NAME.partial`` beside it."""
    out = Path(out)
    return out.parent / f".{out.name}.partial"


def fingerprint(model: nn.Module, attack: Attack, x: torch.Tensor, target: torch.Tensor, piece: int
                ) -> dict[str, Any]:
    """What must match for kept pieces to be reused: the weights, the attack, the rows and the piece size."""
    weights = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        weights.update(name.encode())
        weights.update(t.detach().cpu().contiguous().numpy().tobytes())
    rows = hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes())
    rows.update(target.cpu().contiguous().numpy().tobytes())
    return {"weights_sha256": weights.hexdigest(), "attack": repr(attack), "rows_sha256": rows.hexdigest(),
            "rows": int(x.shape[0]), "piece": int(piece)}


def _save_piece(path: Path, x_adv: torch.Tensor, pred: torch.Tensor, success: torch.Tensor, seconds: float) -> None:
    as8 = torch.round(x_adv.clamp(0, 1) * 255)
    exact = torch.equal(as8 / 255, x_adv)
    tensors = {"x_adv": as8.to(torch.uint8).contiguous() if exact else x_adv.float().contiguous(),
               "pred": pred.long().contiguous(), "success": success.bool().contiguous()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"seconds": f"{seconds:.6f}"})
    tmp.replace(path)


def _load_piece(path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        seconds = float((f.metadata() or {}).get("seconds", 0.0))
    t = load_file(str(path))
    x_adv = t["x_adv"].float().div_(255.0) if t["x_adv"].dtype == torch.uint8 else t["x_adv"]
    return x_adv, t["pred"], t["success"], seconds


def attack_in_pieces(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor, *,
                     folder: str | Path, piece: int = PIECE, batch_size: int = 512,
                     on_batch: Callable[[int, int], None] | None = None,
                     say: Callable[[str], None] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Attack all rows, keeping each finished piece in ``folder`` and reusing the pieces already there.

    Returns:
        ``(x_adv, pred, success, seconds)`` over all rows, ``seconds`` summed over the pieces' own attack times
        (also those of earlier sessions).

    Raises:
        ValueError: ``folder`` holds pieces of another model, attack, selection or piece size (its fingerprint
            differs); the message names the folder to delete.
    """
    if piece < 1:
        raise ValueError(f"piece must be >= 1 rows, got {piece}")
    folder = Path(folder)
    meta = fingerprint(model, attack, x, target, piece)
    meta_path = folder / "meta.json"
    if meta_path.exists():
        kept = json.loads(meta_path.read_text())
        if kept != meta:
            differ = ", ".join(k for k in meta if kept.get(k) != meta[k])
            raise ValueError(f"{folder} holds the pieces of another JSMA run (its {differ} differ); delete that "
                             f"folder to start over, or rerun with the model, settings and samples it was made with")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    n = x.shape[0]
    starts = list(range(0, n, piece))
    done_before = [i for i, _ in enumerate(starts) if (folder / f"piece_{i:05d}.safetensors").exists()]
    if done_before and say is not None:
        say(f"resuming: {len(done_before)} of {len(starts)} pieces of {piece} attacks kept in {folder}")
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]] = []
    for i, lo in enumerate(starts):
        hi = min(lo + piece, n)
        path = folder / f"piece_{i:05d}.safetensors"
        if path.exists():
            parts.append(_load_piece(path))
        else:
            t0 = time.perf_counter()

            def step(done: int, _total: int, lo: int = lo) -> None:
                if on_batch is not None:
                    on_batch(lo + done, n)

            res = attack_batched(attack, model, x[lo:hi], y[lo:hi], target=target[lo:hi], batch_size=batch_size,
                                 on_batch=step)
            seconds = time.perf_counter() - t0
            _save_piece(path, res.x_adv, res.pred, res.success, seconds)
            parts.append(_load_piece(path))  # what a resumed run reads, so both give the same study
        if path.exists() and on_batch is not None:
            on_batch(hi, n)
    x_adv = torch.cat([p[0] for p in parts]) if parts else x.clone()
    pred = torch.cat([p[1] for p in parts]) if parts else torch.empty(0, dtype=torch.long)
    success = torch.cat([p[2] for p in parts]) if parts else torch.empty(0, dtype=torch.bool)
    return x_adv, pred, success, sum(p[3] for p in parts)
