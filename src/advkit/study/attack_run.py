"""``advkit attack``: craft adversarial examples on one model, save them, and report white-box success.

The attack runs batched through :func:`advkit.attacks.attack_batched`, one generator (seeded by ``seed``, after
the random targets are drawn from it) shared by the batches in order.

A run directory holds ``config.json``, ``results.json``, ``adversarial.safetensors`` (clean and adversarial
float tensors, labels, targets, dataset indices) and ``png/`` (one lossless 8-bit PNG per example, rounded and
clipped to the budget). Success and distortion are measured on the float examples and again on the 8-bit ones.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

import advkit
from advkit._files import atomic_write_text, check_writable_dir
from advkit.attacks import Oracle, attack_batched, create, query_attacks
from advkit.attacks.query.base import QueryAttack
from advkit.attacks.query.oracle import OUTPUTS
from advkit.data import load as load_data
from advkit.data import warn_if_seen_in_training
from advkit.evaluate.checks import check_model
from advkit.evaluate.metrics import distortion, predict, rate
from advkit.evaluate.quantize import quantize, save_pngs
from advkit.evaluate.queries import query_stats
from advkit.models import check_input_shape
from advkit.models import load as load_model
from advkit.study.errors import RunExistsError
from advkit.study.runstate import atomic_save_tensors, disk_full_as_error
from advkit.study.sample import ProgressFn

log = logging.getLogger(__name__)

__all__ = ["RunExistsError", "run_attack"]


class _QueryProgress:
    """An oracle's ``on_query`` hook that reports a query attack's progress within a batch of images: the most
    queries any image of the batch has spent so far, out of the per-image budget. :meth:`reset` starts a batch."""

    def __init__(self, progress: ProgressFn, budget: int) -> None:
        self.progress, self.budget = progress, budget
        self.spent = torch.zeros(0, dtype=torch.int64)

    def reset(self) -> None:
        self.spent = torch.zeros(0, dtype=torch.int64)

    def __call__(self, rows: torch.Tensor, rows_of: torch.Tensor, outputs: torch.Tensor) -> None:
        counts = torch.bincount(rows_of.detach().cpu().long())
        if counts.numel() > self.spent.numel():
            self.spent = torch.cat([self.spent, self.spent.new_zeros(counts.numel() - self.spent.numel())])
        self.spent[:counts.numel()] += counts
        self.progress("queries", int(self.spent.max()), self.budget, "per image, this batch")


def run_attack(attack: str, model: str, dataset: str, out: Path | None, *, attack_kwargs: dict[str, Any],
               limit: int | None = 1000, seed: int = 0, targeted: bool = False, batch_size: int = 250,
               only_correct: bool = True, force: bool = False, save_images: bool = True, command: str = "",
               start: str | None = None, surrogate: str | None = None, oracle: str | None = None,
               progress: ProgressFn | None = None) -> dict[str, Any]:
    """Craft with ``attack`` on ``model`` over a dataset split and (optionally) save everything to ``out``.

    Args:
        attack: attack name (grammar of :func:`advkit.attacks.create`).
        model: model name or path (see :func:`advkit.models.load`).
        dataset: dataset name; the test split is used.
        out: run directory, or ``None`` to save nothing.
        attack_kwargs: settings passed to ``create``.
        limit: how many test images to load (before filtering to correctly classified ones).
        seed: seeds the attack's generator (random start, DI) and the random targets.
        targeted: attack toward a random class other than the label (drawn from ``seed``).
        only_correct: attack only images the model classifies correctly (success is then "over clean-correct").
        force: overwrite a finished run in ``out``.
        start: query attacks: craft a transfer example with this attack on ``surrogate`` first and start the
            query attack from it (same eps and norm), so the queries the surrogate saves show.
        surrogate: the model ``start`` is crafted on (zoo name or path).
        oracle: query attacks: what the target answers, ``"scores"`` or ``"label"`` (default: what the attack
            needs).
        progress: ``progress(stage, done, total, detail)``: stage ``"images"`` after each batch of images and,
            for a query attack, stage ``"queries"`` within a batch (the most queries any image of the batch has
            spent, against the per-image budget), so a long query attack shows it is moving.

    Returns:
        The summary written to ``results.json``.
    """
    if out is not None and (out / "results.json").exists() and not force:
        raise RunExistsError(f"{out} already holds a finished run (results.json); pass --force to overwrite it "
                             f"or choose another --out")
    if out is not None:
        check_writable_dir(out)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1 image, got {limit}")
    atk = create(attack, **attack_kwargs)
    if not atk.black_box and (start is not None or oracle is not None):
        raise ValueError(f"{attack} is not a query attack: --start, --surrogate and --oracle apply to the query "
                         f"attacks ({', '.join(query_attacks())})")
    if (start is None) != (surrogate is None):
        raise ValueError("a transfer start needs both --start ATTACK (e.g. sgm+mi) and --surrogate MODEL (the "
                         "model it is crafted on)")
    if oracle is not None and oracle not in OUTPUTS:
        raise ValueError(f"--oracle must be one of {', '.join(OUTPUTS)}, got {oracle!r}")
    if oracle == "label" and isinstance(atk, QueryAttack) and atk.oracle_output == "scores":
        raise ValueError(f"--oracle label: {attack} is score-based and needs class probabilities; use --oracle "
                         f"scores, or a decision-based attack (hsj) against a label-only target")
    start_atk = None
    if start is not None:
        start_atk = create(start, eps=atk.eps, norm=atk.norm)
        if start_atk.black_box:
            raise ValueError(f"--start {start}: the start is crafted on the surrogate with a white- or grey-box "
                             f"attack (pgd, mi, sgm+mi, ...), not a query attack")
    m = load_model(model, dataset=dataset)
    ds = load_data(dataset, "test", limit=limit)
    check_input_shape(m, ds.images.shape[1:], f"{dataset} ({ds.source})")
    warn_if_seen_in_training(m, ds)
    x, y, idx = ds.x, ds.y, ds.indices
    checks = check_model(m, x[:32], y[:32])  # warns (AdvkitSanityWarning) for each failed check
    clean_pred = predict(m, x)
    clean = rate(clean_pred == y)
    if only_correct:
        keep = clean_pred == y
        x, y, idx = x[keep], y[keep], idx[keep] if idx is not None else None
        if not len(y):
            raise ValueError(f"{m.name} classifies none of the {len(ds)} loaded {dataset} images correctly, so "
                             f"none is left to attack; raise --limit, or check that the model belongs to "
                             f"{dataset}")
    g = torch.Generator().manual_seed(seed)
    target = None
    if targeted:
        k = m.num_classes
        target = (y + torch.randint(1, k, y.shape, generator=g)) % k
    x_start = start_info = None
    if start_atk is not None:
        s_model = load_model(str(surrogate), dataset=dataset)
        t0 = time.perf_counter()
        r0 = attack_batched(start_atk, s_model, x, y, target=target, batch_size=batch_size, seed=seed)
        x_start = r0.x_adv
        start_info = {"attack": start, "surrogate": s_model.name, "surrogate_success": rate(r0.success).__dict__,
                      "seconds": round(time.perf_counter() - t0, 3)}
    victim: Any = m
    queries = None
    if isinstance(atk, QueryAttack):
        if progress is not None:
            queries = _QueryProgress(progress, int(atk.max_queries))
        victim = Oracle(m, output=oracle or str(atk.oracle_output), on_query=queries)
    t0 = time.perf_counter()

    def on_batch(_stage: str, done: int, total: int | None, _detail: str) -> None:
        if queries is not None:
            queries.reset()
        if progress is not None:
            progress("images", done, total, "")
    r = attack_batched(atk, victim, x, y, target=target, batch_size=batch_size, generator=g, start=x_start,
                       progress=on_batch)
    seconds = time.perf_counter() - t0
    x_adv, success, fw, bw, info = r.x_adv, r.success, r.forward_passes, r.backward_passes, r.info
    eps = float(getattr(atk, "eps", 0.0))
    norm = str(getattr(atk, "norm", "linf"))
    x_q = quantize(x_adv, x, eps, norm)
    pred_q = predict(m, x_q)
    success_q = pred_q == target if target is not None else pred_q != y
    dist, dist_q = distortion(x_adv, x), distortion(x_q, x)
    summary: dict[str, Any] = {
        "attack": attack, "attack_config": atk.config(),
        "model": m.name, "model_sha256": m.card.get("sha256"), "dataset": dataset, "data_note": ds.note,
        "data_selection": ds.selection, "model_checks": [c.as_dict() for c in checks],
        "targeted": targeted, "seed": seed, "clean_accuracy": clean.value, "clean_n": clean.n,
        "attacked": int(len(y)), "success_over": "clean-correct images" if only_correct else "all images",
        "success": rate(success).__dict__, "success_8bit": rate(success_q).__dict__,
        "linf_max": float(dist["linf"].max()) if len(y) else 0.0,
        "linf_max_8bit": float(dist_q["linf"].max()) if len(y) else 0.0,
        "l2_mean": float(dist["l2"].mean()) if len(y) else 0.0,
        "l2_max": float(dist["l2"].max()) if len(y) else 0.0,
        "l2_max_8bit": float(dist_q["l2"].max()) if len(y) else 0.0,
        "l0_mean": float(dist["l0"].mean()) if len(y) else 0.0,
        "nan_count": int(torch.isnan(x_adv).sum()),
        "pixel_range": [float(x_adv.min()), float(x_adv.max())] if len(y) else [0.0, 0.0],
        "forward_passes": fw, "backward_passes": bw, "seconds": round(seconds, 3),
        "info": info, "advkit_version": advkit.__version__, "command": command,
    }
    if r.queries is not None and isinstance(atk, QueryAttack):
        summary["queries"] = query_stats(r.queries, success, atk.max_queries)
        summary["oracle"] = oracle or atk.oracle_output
    if start_info is not None:
        # the transfer examples that already fool the target: one query each (the check of the start)
        start_info["transfer_success"] = rate(success & (r.queries == 1)).__dict__
        summary["start"] = start_info
    if out is not None:
        tensors = {"x": x.contiguous(), "x_adv": x_adv.contiguous(), "x_adv_8bit": x_q.contiguous(),
                   "y": y.contiguous(), "success": success.to(torch.uint8).contiguous()}
        if r.queries is not None:
            tensors["queries"] = r.queries.contiguous()
        if x_start is not None:
            tensors["x_start"] = x_start.contiguous()
        if idx is not None:
            tensors["index"] = idx.contiguous()
        if target is not None:
            tensors["target"] = target.contiguous()
        with disk_full_as_error(out, command, resumable=False):  # a message naming the disk, not a traceback
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "config.json", json.dumps(
                {"attack": attack, "attack_kwargs": attack_kwargs, "model": model, "dataset": dataset,
                 "limit": limit, "seed": seed, "targeted": targeted, "start": start, "surrogate": surrogate,
                 "oracle": oracle}, indent=2) + "\n")
            atomic_save_tensors(out / "adversarial.safetensors", tensors, {"attack": attack, "model": m.name})
            if save_images and len(y):
                names = [f"{int(i):05d}_y{int(a)}_pred{int(b)}.png" for i, a, b in
                         zip(idx if idx is not None else range(len(y)), y, pred_q, strict=True)]
                save_pngs(x_q, out / "png", names)
            atomic_write_text(out / "results.json", json.dumps(summary, indent=2, default=str) + "\n")
    return summary
