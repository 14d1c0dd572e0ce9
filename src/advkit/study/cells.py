"""One unit of work of a transfer study: craft one shard of a cell on its source, evaluate every model on it.

A *cell* is (source, attack, eps, gamma, seed) over the seed's images; a *shard* is a run of whole batches of it.
Each batch ``k`` of a cell draws its randomness (random start, DI) from its own generator seeded by
``batch_seed(seed, k)`` (:func:`advkit.attacks.attack_batched` with ``seed`` and ``first_batch``), so a cell's
examples do not depend on how it is cut into shards or where the shards run: the local and the Ray backends call
:func:`run_shard` on the same tasks and get the same tensors.

Crafting and evaluating are separate steps: the attack sees only the source; every evaluated model (the source,
for white-box success, then the targets) predicts on the float examples and on their 8-bit rounding under
``torch.no_grad``, each through its own wrapper, by :func:`advkit.study.defended.study_predict`, which reseeds a
random defence from (seed, model, image index) so that its predictions do not depend on how the cell is cut.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advkit.attacks import attack_batched, batch_seed, create
from advkit.evaluate.metrics import distortion
from advkit.evaluate.quantize import quantize
from advkit.models import load
from advkit.study.defended import is_random, reseed_for, study_predict

log = logging.getLogger(__name__)

__all__ = ["ShardTask", "batch_seed", "load_models", "resolve_device", "run_shard", "task_key"]


@dataclass(frozen=True)
class ShardTask:
    """Everything a worker needs to compute one shard (it holds its images, so workers need no dataset).

    Attributes:
        cell: the cell's id.
        shard: index of the shard within the cell.
        source: the source model's spec (zoo name, path, ``torchvision:``/``timm:`` name).
        attack: grammar name.
        label: the attack's label in the study.
        attack_kwargs: resolved settings for :func:`advkit.attacks.create` (eps, steps, alpha, gamma, ...).
        seed: the cell's seed.
        first_batch: index within the cell of the shard's first batch.
        batch_size: images per attack batch.
        images: the shard's clean images, ``uint8`` ``(m, C, H, W)``.
        y: their labels ``(m,)``.
        models: the evaluated models: the source first, then the targets.
        dataset: which zoo bare model names refer to.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        keep: how many adversarial examples to store as float32 and 8-bit (``None``: all).
        target: a targeted study's target classes ``(m,)`` (resolved with the sample), else ``None``.
    """

    cell: str
    shard: int
    source: str
    attack: str
    label: str
    attack_kwargs: dict[str, Any]
    seed: int
    first_batch: int
    batch_size: int
    images: torch.Tensor
    y: torch.Tensor
    models: tuple[str, ...]
    dataset: str
    device: str = "auto"
    keep: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    target: torch.Tensor | None = None


def task_key(task: ShardTask) -> str:
    """SHA-256 of everything that decides a shard's result (attack, settings, seed, batches, images, models): two
    runs whose tasks share a key compute the same tensors, so one may reuse the other's shard file."""
    h = hashlib.sha256()
    h.update(json.dumps([task.source, task.attack, sorted(task.attack_kwargs.items()), task.seed, task.first_batch,
                         task.batch_size, list(task.models), task.dataset, task.keep], default=str).encode())
    h.update(task.images.contiguous().numpy().tobytes())
    h.update(task.y.contiguous().numpy().tobytes())
    if task.target is not None:  # untargeted tasks keep the keys they had before targeted studies existed
        h.update(b"target" + task.target.long().contiguous().numpy().tobytes())
    return h.hexdigest()


def resolve_device(device: str) -> str:
    """``"auto"`` becomes ``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_models(specs: tuple[str, ...] | list[str], dataset: str, device: str,
                cache: MutableMapping[str, nn.Module] | None = None) -> dict[str, nn.Module]:
    """Load each model once (into ``cache`` when given) onto ``device`` (:func:`advkit.models.load`: zoo names,
    checkpoints, adapters and ensemble names, weighted ones included)."""

    cache = {} if cache is None else cache
    out = {}
    for s in specs:
        if s not in cache:
            cache[s] = load(s, dataset=dataset, device=device)
        out[s] = cache[s]
    return out


def run_shard(task: ShardTask, models: Mapping[str, nn.Module]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Craft the shard's examples on the source and evaluate every model on them.

    Args:
        task: the shard.
        models: loaded models by spec (at least the task's ``models``), on the device they should run on.

    Returns:
        ``(tensors, meta)``. Tensors: ``x_adv`` float32 ``(k, C, H, W)`` and ``x_8bit`` uint8 (the first ``k``
        examples, ``k = task.keep`` or all); ``pred`` and ``pred_8bit`` int64 ``(M, m)`` (one row per evaluated
        model); ``white_box`` bool ``(m,)`` (the attack's own success check); ``linf``, ``l2``, ``l0`` and their
        ``_8bit`` versions ``(m,)``; for a targeted task, ``target`` int64 ``(m,)``; for a query attack,
        ``queries`` int64 ``(m,)`` (spent on the source). Meta: the attack's resolved config, passes, seconds,
        merged ``info``, NaN count and pixel range of the float examples.
    """
    atk = create(task.attack, **task.attack_kwargs)
    src = models[task.source]
    dev = next((p.device for p in src.parameters()), torch.device("cpu"))
    # the standard (N, C, H, W) strides, whatever the caller's: a freshly selected one-channel sample has
    # channels-last strides (still "contiguous"), a resumed run reads it back from disk with the standard ones, and
    # convolutions choose their kernel by layout, so the two would differ in the last bit (a generator's output)
    x_all = task.images.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)
    y_all = task.y.long()
    m = int(y_all.shape[0])
    t0 = time.perf_counter()
    target = None if task.target is None else task.target.long()
    first = task.first_batch * task.batch_size  # the index within the cell of the shard's first image
    reseed = None
    if is_random(src):  # a random defence: each attack batch draws from (seed, source, its first image's index)

        def reseed(_stage: str, done: int, _n: int | None, _detail: str) -> None:  # after each batch: the next one
            reseed_for(src, task.seed, task.source + "@attack", first + done)

        reseed("", 0, None, "")
    r = attack_batched(atk, src, x_all, y_all, target=target, batch_size=task.batch_size, seed=task.seed,
                       first_batch=task.first_batch, progress=reseed)
    x_adv, fw, bw, info = r.x_adv, r.forward_passes, r.backward_passes, r.info
    seconds_attack = time.perf_counter() - t0
    eps = float(getattr(atk, "eps", 0.0))
    norm = str(getattr(atk, "norm", "linf"))
    x_q = quantize(x_adv, x_all, eps, norm)
    # under no_grad; a random defence draws per image, from (seed, model, the image's index in the cell)
    preds = [study_predict(models[s], s, x_adv, seed=task.seed, first=first, batch_size=max(task.batch_size, 256),
                           device=str(dev)) for s in task.models]
    preds8 = [study_predict(models[s], s, x_q, seed=task.seed, first=first, batch_size=max(task.batch_size, 256),
                            device=str(dev)) for s in task.models]
    d, d8 = distortion(x_adv, x_all), distortion(x_q, x_all)
    keep = m if task.keep is None else min(task.keep, m)
    tensors: dict[str, torch.Tensor] = {
        "x_adv": x_adv[:keep].float().contiguous(),
        "x_8bit": torch.round(x_q[:keep] * 255.0).to(torch.uint8),
        "pred": torch.stack(preds).long() if preds else torch.zeros(0, m, dtype=torch.long),
        "pred_8bit": torch.stack(preds8).long() if preds8 else torch.zeros(0, m, dtype=torch.long),
        "white_box": r.success.bool(),
        **{k: v.float() for k, v in d.items()}, **{f"{k}_8bit": v.float() for k, v in d8.items()},
    }
    if target is not None:  # the classes it was aimed at: targeted success is pred == target
        tensors["target"] = target.contiguous()
    if r.queries is not None:  # a query attack, run against the source: the queries it spent per image
        tensors["queries"] = r.queries.long().contiguous()
    config = atk.config()
    meta: dict[str, Any] = {
        "cell": task.cell, "shard": task.shard, "source": task.source, "attack": task.attack, "label": task.label,
        "seed": task.seed, "first_batch": task.first_batch, "n": m, "kept": keep, "models": list(task.models),
        "config": config, "norm": norm, "eps": eps, "forward_passes": fw, "backward_passes": bw,
        "seconds_attack": round(seconds_attack, 4), "seconds": round(time.perf_counter() - t0, 4),
        "info": info, "nan_count": int(torch.isnan(x_adv).sum()),
        "pixel_min": float(x_adv.min()) if m else 0.0, "pixel_max": float(x_adv.max()) if m else 0.0,
        "device": str(dev), "extra": dict(task.extra), "key": task_key(task),
    }
    log.debug("shard %s/%d: %d images in %.2fs", task.cell, task.shard, m, meta["seconds"])
    return tensors, meta
