"""The one batched attack loop: cut a large set into batches, attack each, put the results back together.

Every caller that attacks more images than fit in one batch (``advkit attack``, the transfer study's shards, the
reproductions, adversarial training's evaluation) goes through :func:`attack_batched`, so seeding, device moves
and pass counting are done one way everywhere.

Seeding: with ``seed``, batch ``k`` draws its randomness (random start, DI, SI, VMI, Admix) from its own
generator seeded by ``batch_seed(seed, first_batch + k)``, so a batch's examples depend only on (seed, batch
index, its images), not on what ran before it in the process, nor on how the batches are cut into shards or
where they run. With ``generator``, one generator is shared by the batches in order (a single stream).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from advkit.attacks.core.base import Attack, AttackResult
from advkit.attacks.query.oracle import Oracle
from advkit.progress import ProgressFn

__all__ = ["attack_batched", "batch_seed", "merge_info"]


def batch_seed(seed: int, batch: int) -> int:
    """The generator seed of batch ``batch`` under ``seed`` (NumPy ``SeedSequence``, 63 bits)."""
    return int(np.random.SeedSequence([int(seed), int(batch)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def merge_info(total: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """Combine per-batch ``AttackResult.info`` dicts: SGM / LinBP hook and pass counts add up, the rest is kept."""
    for k, v in info.items():
        if isinstance(v, dict) and "hooks_fired" in v and isinstance(total.get(k), dict):
            merged = dict(total[k])
            for count in ("hooks_fired", "renorm_branch_passes"):
                if count in v:
                    merged[count] = int(merged.get(count, 0)) + int(v[count])
            merged["batches"] = int(merged.get("batches", 1)) + 1
            total[k] = merged
        else:
            total[k] = dict(v) if isinstance(v, dict) else v
    return total


def _device_of(model: nn.Module | Oracle) -> torch.device:
    net = model.module if isinstance(model, Oracle) else model
    if net is None:
        return torch.device("cpu")
    for t in (*net.parameters(), *net.buffers()):
        return t.device
    return torch.device("cpu")


def attack_batched(attack: Attack, model: nn.Module | Oracle, x: torch.Tensor, y: torch.Tensor, *,
                   target: torch.Tensor | None = None, batch_size: int = 256, seed: int | None = None,
                   generator: torch.Generator | None = None, first_batch: int = 0,
                   start: torch.Tensor | None = None, progress: ProgressFn | None = None,
                   stage: str = "attack") -> AttackResult:
    """Run ``attack`` on ``model`` over ``x`` in batches of ``batch_size``.

    Args:
        attack: any attack (``advkit.attacks.create(...)``).
        model: the source model; each batch is moved to its device and the results back to ``x``'s.
        x: clean inputs ``(N, C, H, W)`` in ``[0, 1]``.
        y: labels ``(N,)``.
        target: target classes ``(N,)`` for a targeted attack.
        batch_size: images per attack call (>= 1).
        seed: per-batch generators from ``batch_seed(seed, first_batch + k)`` (see the module docstring).
        generator: one generator shared by all batches; only without ``seed``. Neither: ``seed=0``.
        first_batch: index of the first batch within a larger run (a shard of a study cell).
        start: query attacks: the examples to start from ``(N, C, H, W)`` (e.g. transfer examples).
        progress: :data:`advkit.progress.ProgressFn`, called after each batch as ``(stage, images done, N,
            "success S/D")`` (``S`` of the ``D`` images attacked so far succeeded).
        stage: the stage name ``progress`` is called with.

    Returns:
        One :class:`AttackResult` over all ``N`` images: tensors concatenated, passes summed, info merged.

    Raises:
        ValueError: ``batch_size`` < 1, both ``seed`` and ``generator`` given, or what the attack raises.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if seed is not None and generator is not None:
        raise ValueError("pass seed (one generator per batch) or generator (one shared stream), not both")
    if seed is None and generator is None:
        seed = 0
    if start is not None and (not isinstance(start, torch.Tensor) or start.shape != x.shape):
        raise ValueError(f"start must be shaped like x {tuple(x.shape)}, got "
                         f"{tuple(start.shape) if isinstance(start, torch.Tensor) else type(start).__name__}")
    dev = _device_of(model)
    n = int(x.shape[0])
    xs, succ, preds = [], [], []
    queries: list[torch.Tensor] = []
    fw = bw = 0
    info: dict[str, Any] = {}
    succeeded = 0
    for k, i in enumerate(range(0, n, batch_size)):
        g = generator if seed is None else torch.Generator().manual_seed(batch_seed(seed, first_batch + k))
        sl = slice(i, i + batch_size)
        tb = None if target is None else target[sl].to(dev)
        sb = None if start is None else start[sl].to(dev)
        r = attack(model, x[sl].to(dev), y[sl].to(dev), target=tb, generator=g, start=sb)
        xs.append(r.x_adv.detach().to(x.device))
        succ.append(r.success.detach().to(x.device))
        preds.append(r.pred.detach().to(x.device))
        if r.queries is not None:
            queries.append(r.queries.detach().to(x.device))
        fw, bw = fw + r.forward_passes, bw + r.backward_passes
        info = merge_info(info, r.info or {})
        if progress is not None:
            done = min(i + batch_size, n)
            succeeded += int(succ[-1].sum())
            progress(stage, done, n, f"success {succeeded}/{done}")
    if not xs:
        empty = torch.zeros(0, dtype=torch.bool, device=x.device)
        return AttackResult(x_adv=x.clone(), success=empty, pred=torch.zeros(0, dtype=torch.long, device=x.device),
                            forward_passes=0, backward_passes=0, target=target, info={})
    return AttackResult(x_adv=torch.cat(xs), success=torch.cat(succ), pred=torch.cat(preds), forward_passes=fw,
                        backward_passes=bw, target=target, info=info,
                        queries=torch.cat(queries) if len(queries) == len(xs) else None)
