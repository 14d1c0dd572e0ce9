"""Which images a transfer study attacks.

The split is scanned in a seeded order (``sample.order``); with ``sample.only_correct`` only images that every
model (sources and targets) classifies correctly are kept, until ``sample.pool`` are found; each seed attacks
``sample.n`` of them (:func:`seed_picks`). Clean accuracy of every model is measured over all images scanned.

A targeted study (``targeted`` in the experiment file) also resolves each attacked image's target class here
(:func:`study_targets`), once, before any cell runs; with a fixed target class, images of that class are left out
of the sample (:func:`target_class`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

from advkit.attacks import batch_seed
from advkit.progress import ProgressFn
from advkit.study.defended import study_predict
from advkit.study.schema import StudyConfig

__all__ = ["ProgressFn", "sample_key", "seed_picks", "select_sample", "study_targets", "target_class"]

def seed_picks(cfg: StudyConfig, pool: int | None = None) -> torch.Tensor:
    """Which pool positions each seed attacks, ``(S, n)``: all of them in order when ``pool == n``, else ``n``
    drawn without replacement by a generator seeded from ``(sample.seed, seed)`` (``draw: mixed``) or from the
    seed alone (``draw: seed``). ``pool``: the pool's size (default ``sample.pool``)."""
    s = cfg.sample
    size = s.pool if pool is None else pool
    picks = []
    for seed in cfg.seeds:
        if size == s.n:
            picks.append(torch.arange(s.n))
        else:
            g = torch.Generator().manual_seed(seed if s.draw == "seed" else batch_seed(s.seed, 1_000_003 + seed))
            picks.append(torch.randperm(size, generator=g)[: s.n])
    return torch.stack(picks).long()


def target_class(cfg: StudyConfig, classes: list[str] | tuple[str, ...]) -> int | None:
    """The fixed target class of ``targeted: CLASS`` as an index (``None`` for an untargeted, random or
    least-likely study); a name is looked up in ``classes`` (the loaded dataset's).

    Raises:
        ValueError: naming ``targeted`` when the class is not one of the dataset's.
    """
    t = cfg.targeted
    if t is None or t in ("random", "least_likely"):
        return None
    if isinstance(t, int):
        if classes and t >= len(classes):
            raise ValueError(f"targeted: class {t} is not a class of {cfg.dataset} ({len(classes)} classes)")
        return t
    if t not in classes:
        raise ValueError(f"targeted: {t!r} is not a class of {cfg.dataset} (classes: {', '.join(classes)})")
    return list(classes).index(t)


def _scores(model: nn.Module, spec: str, x: torch.Tensor, device: str, seed: int,
            index: torch.Tensor | None = None) -> torch.Tensor:
    """The model's logits ``(P, K)`` on uint8 images ``x`` (split rows ``index``), on the CPU."""
    xf = x.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)
    return study_predict(model, spec, xf, seed=seed, indices=None if index is None else index.tolist(),
                         device=device, logits=True)


def study_targets(cfg: StudyConfig, sample: dict[str, torch.Tensor], classes: list[str] | tuple[str, ...],
                  models: dict[str, nn.Module], device: str) -> dict[str, torch.Tensor]:
    """The target class of every attacked image, per source: ``{source: (S, n)}`` (row ``s``: seed ``s``'s picks).

    * ``random``: per seed, a generator seeded from ``(sample.seed, seed)`` draws one offset in ``1..K-1`` per
      pool image, ``target = (y + offset) % K``: never the label, the same for every source and attack.
    * ``least_likely``: the class the source scores lowest on the clean image (Kurakin et al. 2017), so each
      source has its own; where that is the label (a source that misclassifies it, only with
      ``only_correct: false``), the second-lowest.
    * a class: that class for every image (the sample holds none of its images).

    Returns ``{}`` for an untargeted study.
    """
    if cfg.targeted is None:
        return {}
    y, picks = sample["y"].long(), sample["picks"]
    first = cfg.sources[0]
    k = len(classes) or int(_scores(models[first], first, sample["images"][:1], device, cfg.sample.seed).shape[1])
    if cfg.targeted == "least_likely":
        out = {}
        for src in cfg.sources:
            scores = _scores(models[src], src, sample["images"], device, cfg.sample.seed, sample.get("index"))
            order = scores.argsort(dim=1, stable=True)
            least = torch.where(order[:, 0] == y, order[:, 1], order[:, 0])
            out[src] = least[picks].contiguous()
        return out
    if cfg.targeted == "random":
        rows = []
        for seed in cfg.seeds:
            g = torch.Generator().manual_seed(batch_seed(cfg.sample.seed, 2_000_003 + seed))
            offset = torch.randint(1, k, (int(y.numel()),), generator=g)
            rows.append((y + offset) % k)
        per_pool = torch.stack(rows)
        t = torch.stack([per_pool[s][picks[s]] for s in range(len(cfg.seeds))]).contiguous()
    else:
        cls = target_class(cfg, classes)
        t = torch.full_like(picks, int(cls if cls is not None else 0))
    return dict.fromkeys(cfg.sources, t)


def select_sample(cfg: StudyConfig, models: dict[str, nn.Module], device: str,
                  progress: ProgressFn | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Choose the images: scan the split in ``sample.order`` and keep ``sample.pool`` eligible ones.

    Returns:
        ``(tensors, meta)``: ``images`` uint8 ``(P, C, H, W)``, ``y``, ``index`` (into the split), ``clean_pred``
        ``(M, P)`` (models in ``meta["models"]`` order), ``picks`` ``(S, n)`` (positions in the pool per seed);
        meta: ``examined`` and ``correct`` per model over every scanned image, data source and note.

    Raises:
        ValueError: fewer eligible images than ``sample.pool``.
    """
    from advkit.data import load as load_data
    from advkit.data import warn_if_seen_in_training
    from advkit.models import check_input_shape

    s = cfg.sample
    ds = load_data(cfg.dataset, s.split, data_dir=cfg.data_dir, **cfg.data_options)
    # the scan order: a permutation drawn from sample.seed, or the split's own order
    order = (torch.arange(len(ds)) if s.order == "first"
             else torch.from_numpy(np.random.default_rng(s.seed).permutation(len(ds))))
    images, labels = ds.images[order], ds.y[order]
    rows = ds.indices[order] if ds.indices is not None else order
    names = list(models)
    for m in names:
        check_input_shape(models[m], ds.images.shape[1:], f"dataset {cfg.dataset} ({ds.source})")
        warn_if_seen_in_training(models[m], ds)
    excluded = target_class(cfg, ds.classes)
    want = None if s.pool_all else s.pool  # None: every eligible image in the range
    chunk = max(256, s.pool)
    keep: list[torch.Tensor] = []
    preds: list[torch.Tensor] = []
    found = examined = 0
    correct = dict.fromkeys(names, 0)
    total = len(ds) if s.stop is None else min(len(ds), s.stop)
    if s.start >= total:
        raise ValueError(f"sample.range: starts at {s.start}, but {cfg.dataset} {s.split} has {len(ds)} images")
    for start in range(s.start, total, chunk):
        x = images[start:min(start + chunk, total)].float().div_(255.0)
        y = labels[start:min(start + chunk, total)]
        split_rows = rows[start:min(start + chunk, total)].tolist()  # a random defence draws per split image
        p = torch.stack([study_predict(models[m], m, x, seed=s.seed, indices=split_rows, batch_size=500,
                                       device=device) for m in names])
        ok = (p == y).all(0) if s.only_correct else torch.ones_like(y, dtype=torch.bool)
        if excluded is not None:  # targeted: CLASS attacks no image of that class
            ok &= y != excluded
        local = ok.nonzero().flatten()
        if want is not None:
            local = local[: want - found]
        if not s.only_correct and excluded is None:  # the pool is exactly the first `pool` images scanned
            p, y = p[:, : len(local)], y[: len(local)]
        for i, m in enumerate(names):
            correct[m] += int((p[i] == y).sum())
        examined += len(y)
        keep.append(local + start)
        preds.append(p[:, local])
        found += len(local)
        if progress is not None:
            progress("sample", found, want or found, f"{found}/{want or 'all'} images ({examined} scanned)")
        if want is not None and found >= want:
            break
    if found < (want or s.n):
        why = " that every model classifies correctly" if s.only_correct else ""
        raise ValueError(f"sample.pool: only {found} images{why} in {cfg.dataset} {s.split} ({total} scanned); "
                         f"lower sample.n / sample.pool or set sample.only_correct: false")
    pos = torch.cat(keep)
    tensors = {"images": images[pos].contiguous(), "y": labels[pos].contiguous(), "index": rows[pos].long(),
               "clean_pred": torch.cat(preds, 1).long(), "picks": seed_picks(cfg, found)}
    meta = {"models": names, "examined": examined, "correct": correct, "dataset": cfg.dataset, "split": s.split,
            "source": ds.source, "note": ds.note, "classes": list(ds.classes), "seeds": list(cfg.seeds)}
    if excluded is not None:
        name = ds.classes[excluded] if excluded < len(ds.classes) else str(excluded)
        meta["targeted_note"] = (f"targeted at class {excluded} ({name}): images of that class are left out of the "
                                 "sample (they cannot be moved to their own class)")
    return tensors, meta


def sample_key(cfg: StudyConfig) -> str:
    """What decides the sample: a run whose sample has the same key chose the same images."""
    spec = asdict(cfg.sample)
    for k, default in (("start", 0), ("stop", None), ("pool_all", False), ("draw", "mixed")):
        if spec[k] == default:  # options added later stay out of the key, so earlier runs still resume
            del spec[k]
    key = [cfg.dataset, cfg.data_dir, cfg.data_options, spec, list(dict.fromkeys(
        (*cfg.sources, *cfg.targets))), cfg.device]
    if cfg.targeted not in (None, "random", "least_likely"):  # a fixed target class leaves its images out
        key.append({"excluded_class": cfg.targeted})
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
