"""Reproducing Zhao et al., "On Success and Simplicity: A Second Look at Transferable Targeted Attacks" (NeurIPS
2021) on the Fashion-MNIST zoo.

The paper's claim: with the plain logit loss (maximise the target's logit) a simple DI+TI+MI attack keeps gaining
targeted transfer success as the iterations grow from 20 to 300, while the cross-entropy (CE) loss stalls, because
its gradient vanishes as the target's probability saturates; Po+Trip (Li et al., CVPR 2020) is in between.

Protocol (the authors' code, github ZhengyuZhao/Targeted-Transfer ``eval_single.py`` / ``eval_ensemble.py``): the
base attack is DI+TI+MI (``mi+di+ti``; DI with probability 0.7, MI with decay 1), a step of 2/255 whatever the
number of iterations, eps 16/255 (here also Fashion-MNIST's usual 0.1), 20 / 100 / 300 iterations, a random target
class per image, single sources and ensembles whose logits are averaged. Here the sources are resnet20, resnet56
and densenet_bc40 and their hold-out ensembles (``ensemble:resnet56+densenet_bc40`` holds resnet20 out, and so
on: the paper attacks each held-out model with the ensemble of the others), over 3 seeds, against every other
plainly trained zoo model (the adversarially trained twins are left out as in :func:`advkit.reproduce.sgm.
_pick_sources`). TI's kernel is 5, as the authors use at 299 px: at 28 px a 15 px kernel (Dong et al.'s) would
blur across half the image, and 5 px is already a sixth of it (examples/transfer_small.yaml uses 5 too).
Differences from the authors' code: advkit's MI accumulates the L1-normalised gradient (Dong et al.'s method; the
authors add the raw TI-smoothed gradient) and DI resizes the padded image back to 28 px (see
:func:`advkit.attacks.gradient.transforms.input_diversity`).

Each iteration count is one transfer study (``out/steps-20``, ``out/steps-100``, ...) on the same images and the
same targets (the sample and its random targets depend only on ``sample`` and the seeds), so resume, manifests
and each study's own report come from :func:`advkit.study.runner.run_study`. The combined ``report.md`` /
``report.html`` gives targeted success per (loss, iterations) averaged over the transfer pairs (source, target
that is not the source or one of its members), with Student-t intervals over seeds (over the pairs when there is
one seed), and states whether the finding holds, from the intervals of the gains (see :func:`verdict`).

Cost: the quick variant (resnet20 only, 50 images, 10 and 20 iterations, one seed, both eps) ran in 64 s on two
shared CPU cores, about 6 ms per image and iteration of resnet20. A forward and backward pass of resnet56 costs
1.7 and of densenet_bc40 2.5 resnet20s (measured here), so the six sources cost 15.6 resnet20s, and the full run
(1,000 images, 20 + 100 + 300 iterations, 3 losses, 2 eps, 3 seeds) is about 13,000 times the quick run's attack
work: an estimated 8 to 10 days on these CPU cores (not run here), probably hours on one GPU (not measured).
``--set n=100`` and ``--set iterations=20,100`` bring a CPU run to about 6 hours.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advkit.evaluate.stats import summarize_seeds
from advkit.models import adversarially_trained, read_card, shipped
from advkit.report.html import Document, Heading, Para, Table
from advkit.report.run_report import build_report, load_run, save_document
from advkit.reproduce.registry import Outcome, Reproduction, RunContext, register
from advkit.study.config import load_config
from advkit.study.runner import run_study
from advkit.study.runstate import RunDir
from advkit.study.schema import eps_label

log = logging.getLogger(__name__)

__all__ = ["TARGETED", "TargetedSettings", "targeted_configs", "transfer_success", "verdict"]

CITATION = ("Zhao, Liu & Larson, \"On Success and Simplicity: A Second Look at Transferable Targeted Attacks\", "
            "NeurIPS 2021")


@dataclass(frozen=True)
class TargetedSettings:
    """The targeted-transfer reproduction's settings.

    Attributes:
        quick: the smoke-sized version (see the registration's quick variant); said in the report.
        dataset: the zoo's dataset.
        sources: the single sources (zoo names or ``.safetensors`` paths).
        ensembles: also attack from each hold-out ensemble of the sources (all sources but one; needs 3 or more).
        targets: the models evaluated (default: every plainly trained zoo model of the dataset).
        losses: the attack losses compared (``ce``, ``potrip``, ``logit``, ``margin``).
        iterations: the iteration counts, one study each, in increasing order.
        eps: the L-inf budgets (fractions allowed).
        alpha: the step size, the same for every iteration count (the paper's 2/255).
        ti_kernel: TI's kernel size (5 for 28 px images, as the authors use at 299 px).
        di_prob: DI's probability (the authors' 0.7).
        seeds: the seeds.
        n: images per seed (each seed draws them from a pool of 2n; the paper's 1,000).
        batch_size: images per attack batch.
        backend: ``local`` or ``ray`` (not compared on resume).
        address: the Ray cluster (not compared on resume).
    """

    quick: bool = False
    dataset: str = "fashion-mnist"
    sources: tuple[str, ...] = ("resnet20", "resnet56", "densenet_bc40")
    ensembles: bool = True
    targets: tuple[str, ...] = ()
    losses: tuple[str, ...] = ("ce", "potrip", "logit")
    iterations: tuple[int, ...] = (20, 100, 300)
    eps: tuple[str, ...] = ("16/255", "0.1")
    alpha: str = "2/255"
    ti_kernel: int = 5
    di_prob: float = 0.7
    seeds: tuple[int, ...] = (0, 1, 2)
    n: int = 1000
    batch_size: int = 100
    backend: str = "local"
    address: str | None = field(default=None)

    def __post_init__(self) -> None:
        if self.backend not in ("local", "ray"):
            raise ValueError(f"backend must be 'local' or 'ray', got {self.backend!r}; --set backend=local")
        if not self.sources:
            raise ValueError("sources is empty; name at least one model, e.g. --set sources=resnet20")
        if self.ensembles and len(self.sources) < 3:
            raise ValueError(f"ensembles needs 3 or more sources (a hold-out ensemble of the others has 2 or more "
                             f"members), got {len(self.sources)}; --set ensembles=false or add sources")
        if len(self.iterations) < 2 or list(self.iterations) != sorted(set(self.iterations)) \
                or self.iterations[0] < 1:
            raise ValueError(f"iterations must be 2 or more increasing counts >= 1, got {list(self.iterations)}; "
                             f"--set iterations=20,100,300")
        if not self.losses or len(set(self.losses)) != len(self.losses):
            raise ValueError(f"losses must name distinct losses, got {list(self.losses)}; --set losses=ce,logit")
        if not self.eps:
            raise ValueError("eps is empty; --set eps=16/255,0.1")
        if self.n < 1:
            raise ValueError(f"n must be >= 1 (images per seed), got {self.n}; --set n=1000")
        if not self.seeds or any(k < 0 for k in self.seeds):
            raise ValueError(f"seeds must be one or more integers >= 0, got {list(self.seeds)}; --set seeds=0,1,2")


def _members(source: str) -> list[str]:
    """The members of an ``ensemble:A+B[@fuse]`` name (the name itself for a single model)."""
    if not source.startswith("ensemble:"):
        return [source]
    return source[len("ensemble:"):].split("@")[0].split("+")


def _stem(spec: str) -> str:
    return Path(spec).stem if spec.endswith(".safetensors") else spec


def holdout_ensembles(sources: tuple[str, ...]) -> list[str]:
    """``ensemble:`` names of every hold-out ensemble: for each source, the others (logits averaged, as in the
    authors' code)."""
    return ["ensemble:" + "+".join(s for s in sources if s != held) for held in sources]


def targeted_configs(s: TargetedSettings) -> dict[str, dict[str, Any]]:
    """The studies, one per iteration count (``steps-20``, ...), as experiment dicts; all attack the same images
    with the same random targets.

    Raises:
        ConfigError: a study the settings make is invalid (an unknown model or loss, a bad eps).
    """
    targets = list(s.targets) or [p.stem for p in shipped(s.dataset) if not adversarially_trained(read_card(p))]
    sources = [*s.sources, *(holdout_ensembles(s.sources) if s.ensembles else [])]
    attacks = [{"name": "mi+di+ti", "label": loss, "settings": {"loss": loss, "ti_kernel": s.ti_kernel,
                                                                "di_prob": s.di_prob}} for loss in s.losses]
    mode = " (quick)" if s.quick else ""
    out = {}
    for steps in s.iterations:
        out[f"steps-{steps}"] = {
            "title": f"Targeted transfer{mode}: DI+TI+MI, {steps} iterations", "dataset": s.dataset,
            "sources": sources, "targets": targets, "attacks": attacks, "eps": list(s.eps), "steps": steps,
            "alpha": s.alpha, "seeds": list(s.seeds), "targeted": "random", "baseline": s.losses[0],
            "sample": {"n": s.n, "pool": 2 * s.n, "only_correct": True, "seed": 0},
            "batch_size": s.batch_size, "save_png": 4, "save_tensors": False}
    for c in out.values():
        load_config(c)  # every problem now, before any work
    return out


def transfer_success(records: dict[str, Any]) -> dict[tuple[str, str, int], dict[tuple[str, str], float]]:
    """Targeted success (float images, over all images) of each transfer pair: ``{(attack, eps, seed): {(source,
    target): rate}}``; a pair is transfer when the target is neither the source nor one of its members."""
    out: dict[tuple[str, str, int], dict[tuple[str, str], float]] = {}
    for r in records["success"]:
        if r["images"] != "float" or r["over"] != "all":
            continue
        if r["target"] in {_stem(m) for m in _members(r["source"])} | {r["source"]}:
            continue
        out.setdefault((r["attack"], r["eps"], r["seed"]), {})[(r["source"], r["target"])] = float(r["rate"])
    return out


def _interval(values: list[float]) -> tuple[float, float | None, float | None]:
    s = summarize_seeds(values)
    return s.mean, s.low, s.high


def _fmt(m: float, lo: float | None, hi: float | None, sign: bool = False) -> str:
    f = "{:+.1f}" if sign else "{:.1f}"
    return f.format(100 * m) + ("" if lo is None or hi is None else f" [{f.format(100 * lo)}, {f.format(100 * hi)}]")


def verdict(late_gain: tuple[float, float | None, float | None],
            gain_difference: tuple[float, float | None, float | None]) -> str:
    """``"holds"`` when the logit loss's gain over the last step of iterations and its gain over CE's from the
    first to the last count both have intervals above 0; ``"does not hold"`` when either interval lies at or below
    0; ``"inconclusive"`` otherwise (an interval across 0, or no interval at all)."""
    bounds = [late_gain[1], late_gain[2], gain_difference[1], gain_difference[2]]
    if any(b is None for b in bounds):
        return "inconclusive"
    lg_lo, lg_hi, d_lo, d_hi = (float(b) for b in bounds if b is not None)
    if lg_lo > 0 and d_lo > 0:
        return "holds"
    if lg_hi <= 0 or d_hi <= 0:
        return "does not hold"
    return "inconclusive"


def analyse(records: dict[int, dict[str, Any]], s: TargetedSettings) -> tuple[Document, list[str], dict[str, Any]]:
    """The combined report, its headline and the numbers from each study's records (``{steps: records}``)."""
    tables = {steps: transfer_success(rec) for steps, rec in records.items()}
    iters, seeds = sorted(tables), list(s.seeds)
    per_seed = len(seeds) > 1
    unit = "seeds" if per_seed else "transfer pairs (one seed: no spread over seeds)"

    def values(loss: str, eps: str, steps: int) -> list[float]:
        """One value per unit: per seed the mean over the pairs; with one seed, each pair."""
        rows = [tables[steps][(loss, eps, k)] for k in seeds]
        if per_seed:
            return [sum(r.values()) / len(r) for r in rows]
        return [rows[0][p] for p in sorted(rows[0])]

    def gain(loss: str, eps: str, a: int, b: int) -> list[float]:
        return [y - x for x, y in zip(values(loss, eps, a), values(loss, eps, b), strict=True)]

    doc = Document(f"Targeted transfer (Zhao et al., NeurIPS 2021) on {s.dataset}{' — quick' if s.quick else ''}")
    doc.add(Para(f"{CITATION}: DI+TI+MI (TI kernel {s.ti_kernel}, DI probability {s.di_prob}), step {s.alpha} for "
                 f"every iteration count, a random target class per image, sources {', '.join(s.sources)}"
                 f"{' and their hold-out ensembles (logits averaged)' if s.ensembles else ''}, {s.n} images per "
                 f"seed, seeds {seeds}. Targeted success = share of images the target model labels with the chosen "
                 f"class, over all images (float images), averaged over the transfer pairs (a target that is "
                 f"neither the source nor one of its members); 95% Student-t intervals over {unit}. Each iteration "
                 f"count is a study of its own, with its report: "
                 f"{', '.join(f'steps-{k}/report.html' for k in iters)}."))
    lines: list[str] = []
    result: dict[str, dict[Any, Any]] = {"success": {}, "findings": {}}
    first, last = iters[0], iters[-1]
    for eps in s.eps:
        label = eps_label(eps)
        rows = []
        for loss, steps in itertools.product(s.losses, iters):
            m = _interval(values(loss, label, steps))
            result["success"][(loss, steps, label)] = m
            rows.append([loss, str(steps), _fmt(*m)])
        doc.add(Heading(f"Targeted transfer success, eps {label}"),
                Table(["loss", "iterations", "targeted success % [95% CI]"], rows))
        spans = [*zip(iters, iters[1:], strict=False), *([(first, last)] if len(iters) > 2 else [])]
        gains = [[loss, *[_fmt(*_interval(gain(loss, label, a, b)), sign=True) for a, b in spans]]
                 for loss in s.losses]
        doc.add(Table(["loss", *[f"{a}→{b}" for a, b in spans]], gains,
                      caption=f"Change of targeted success with the iterations, eps {label}, in points [95% CI]."))
        if "logit" in s.losses and "ce" in s.losses:
            late = _interval(gain("logit", label, iters[-2], last))
            diff = _interval([lg - cg for lg, cg in zip(gain("logit", label, first, last),
                                                        gain("ce", label, first, last), strict=True)])
            v = verdict(late, diff)
            result["findings"][label] = {"verdict": v, "logit_late_gain": late, "logit_minus_ce_gain": diff}
            sentence = (f"eps {label}: Zhao et al.'s finding {v} here: the logit loss gains "
                        f"{_fmt(*late, sign=True)} points from {iters[-2]} to {last} iterations, and its gain "
                        f"from {first} to {last} minus CE's is {_fmt(*diff, sign=True)} points.")
            doc.add(Para(sentence))
            lines.append(sentence)
        else:
            doc.add(Para(f"eps {label}: no verdict on Zhao et al.'s finding: it compares the logit and CE losses, "
                         f"and the losses run were {', '.join(s.losses)} (--set losses=ce,potrip,logit)."))
    doc.add(Para("Verdict rule: holds when both intervals lie above 0 (logit keeps gaining, and gains more than "
                 "CE); does not hold when either lies at or below 0; inconclusive otherwise (including a single "
                 "unit, which has no interval). The paper's numbers are ImageNet numbers on large networks; "
                 "compare the trend over iterations, not the levels."))
    return doc, lines, result


def _work(out: Path, s: TargetedSettings, run: RunContext) -> Outcome:
    t0 = time.perf_counter()
    cfgs = targeted_configs(s)
    records: dict[int, dict[str, Any]] = {}
    done: list[Path] = []
    for name, cfg in cfgs.items():
        def stage(st: str, k: int, total: int | None, detail: str, _n: str = name) -> None:
            if run.progress is not None:
                run.progress(f"{_n}: {st}", k, total, detail)

        if RunDir(out / name).finished and not run.force:  # a resumed reproduction: this study is done
            log.info("%s: finished study found; reusing it", out / name)
            records[int(cfg["steps"])] = load_run(out / name)[0]
        else:
            records[int(cfg["steps"])] = run_study(cfg, out / name, force=run.force, backend=s.backend,
                                                   address=s.address, progress=stage, command=run.command,
                                                   reuse=list(done)).records
            save_document(build_report(out / name), out / name)
        done.append(out / name)
    doc, lines, result = analyse(records, s)
    seconds = time.perf_counter() - t0
    return Outcome(doc, [*lines, f"finished in {seconds:.0f} s"], result)


TARGETED = register(Reproduction(
    "targeted-transfer", "Zhao et al. 2021 (targeted transfer: logit vs CE vs Po+Trip over 20/100/300 iterations, "
                         "DI+TI+MI) on the Fashion-MNIST zoo, single sources and hold-out ensembles (quick: about a "
                         "minute; full: an estimated 8-10 days on 2 CPU cores).",
    TargetedSettings, {"quick": True, "sources": ("resnet20",), "ensembles": False, "iterations": (10, 20),
                       "seeds": (0,), "n": 50, "batch_size": 50}, _work, runtime=("backend", "address")))
