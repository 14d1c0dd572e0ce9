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
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advkit._files import atomic_write_text
from advkit.attacks import Attack, attack_batched
from advkit.models.checkpoint import tensor_digest
from advkit.progress import ProgressFn, report
from advkit.study.runstate import atomic_save_tensors, read_tensors

__all__ = ["PIECE", "attack_in_pieces", "fingerprint", "partial_folder"]

PIECE = 4608  # rows per kept piece: 512 samples x 9 targets, about 2 minutes of JSMA on LeNet and 2 cores

Piece = tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]  # x_adv, pred, success, seconds


def partial_folder(out: str | Path) -> Path:
    """Where the pieces of the run folder ``out`` are kept until the study is saved: ``.NAME.partial`` beside it."""
    out = Path(out)
    return out.parent / f".{out.name}.partial"


def fingerprint(model: nn.Module, attack: Attack, x: torch.Tensor, target: torch.Tensor, piece: int
                ) -> dict[str, Any]:
    """What must match for kept pieces to be reused: the weights, the attack, the rows and the piece size."""
    rows = hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes())
    rows.update(target.cpu().contiguous().numpy().tobytes())
    return {"weights_sha256": tensor_digest(model), "attack": repr(attack), "rows_sha256": rows.hexdigest(),
            "rows": int(x.shape[0]), "piece": int(piece)}


def _save_piece(path: Path, x_adv: torch.Tensor, pred: torch.Tensor, success: torch.Tensor, seconds: float) -> None:
    as8 = torch.round(x_adv.clamp(0, 1) * 255)
    exact = torch.equal(as8 / 255, x_adv)  # then the 8-bit file reads back bit for bit
    atomic_save_tensors(path, {"x_adv": as8.to(torch.uint8) if exact else x_adv.float(), "pred": pred.long(),
                               "success": success.bool()}, {"seconds": seconds})


def _load_piece(path: Path) -> Piece:
    t, meta = read_tensors(path)
    x_adv = t["x_adv"].float().div_(255.0) if t["x_adv"].dtype == torch.uint8 else t["x_adv"]
    return x_adv, t["pred"], t["success"], float(meta.get("seconds", 0.0))


def attack_in_pieces(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor, *,
                     folder: str | Path, piece: int | None = None, batch_size: int = 512,
                     progress: ProgressFn | None = None, stage: str = "JSMA attacks") -> Piece:
    """Attack all rows, keeping each finished piece in ``folder`` and reusing the pieces already there.

    Args:
        piece: rows per kept piece (default :data:`PIECE`).
        progress: ``progress(stage, done_rows, total_rows, detail)`` after each batch; when kept pieces are
            reused, the first report's detail says how many (``"resumed: 2 of 3 pieces ... kept in FOLDER"``).
        stage: the stage name given to ``progress``.

    Returns:
        ``(x_adv, pred, success, seconds)`` over all rows, ``seconds`` summed over the pieces' own attack times
        (also those of earlier sessions).

    Raises:
        ValueError: ``folder`` holds pieces of another model, attack, selection or piece size (its fingerprint
            differs); the message names the folder to delete.
    """
    piece = PIECE if piece is None else piece
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
    paths = [(lo, min(lo + piece, n), folder / f"piece_{i:05d}.safetensors") for i, lo in enumerate(range(0, n, piece))]
    kept_pieces = sum(p.exists() for _, _, p in paths)
    if kept_pieces:
        report(progress, stage, 0, n, f"resumed: {kept_pieces} of {len(paths)} pieces of {piece} attacks kept in "
                                      f"{folder}")
    parts: list[Piece] = []
    for lo, hi, path in paths:
        if path.exists():
            parts.append(_load_piece(path))
            report(progress, stage, hi, n)
            continue

        def step(_stage: str, done: int, _total: int | None, _detail: str, lo: int = lo) -> None:  # over all rows
            report(progress, stage, lo + done, n)

        t0 = time.perf_counter()
        res = attack_batched(attack, model, x[lo:hi], y[lo:hi], target=target[lo:hi], batch_size=batch_size,
                             progress=step)
        parts.append((res.x_adv, res.pred, res.success, time.perf_counter() - t0))
        _save_piece(path, *parts[-1])
    if not parts:
        return x.clone(), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.bool), 0.0
    return (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts]),
            sum(p[3] for p in parts))
