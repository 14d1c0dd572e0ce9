"""``advkit reproduce cross-domain``: do host-model perturbations cross domains?

The seeds' proposed experiment (after Naseer et al., NeurIPS 2019, "Cross-Domain Transferability of Adversarial
Perturbations"): perturbation generators and universal perturbations (Moosavi-Dezfooli et al. 2017) trained on
one dataset's host models are applied to another dataset's images and measured on that dataset's models, next to

* the in-domain generator and universal perturbation (trained on the evaluation domain's own hosts),
* I-FGSM and SGM crafted on an in-domain surrogate (the attacker has the domain's data and a model like the
  target's), and
* the random-sign noise control at the same eps (what the targets' fragility to any perturbation of that size gives).

Every seed ``k`` trains its own generators and perturbations (initialisation, shuffling, UAP images and order from
``k``) and draws its own evaluation images (a random sample of each test split from ``k``), so the intervals, Student
t over the seeds, cover both training and sampling variation. A cell whose target *is* the host or the surrogate
(the same checkpoint) is white-box: shown, but kept out of every transfer mean.

Datasets of different shapes need ``resize=True``: each host's perturbation is then carried to the other shape
(the image resized to the host's input, the host's perturbation resized back, bilinear; grey repeated to colour,
colour averaged to grey) and clipped to eps again. Without it the run stops before any work.

Files (``out/``): ``results/rows.csv`` (one row per domain, method, seed and target), ``results/per_target.csv``,
``results/headline.csv`` (over seeds), ``results.json`` (everything, written last: its presence marks a finished
run), ``figures/``, ``report.md`` / ``report.html``, ``manifest.json`` (versions, command, hashes of models, data
samples and trained artefacts), ``artefacts/`` (the generators and perturbations with their cards, reusable as
``generator:PATH`` / ``uap:PATH``; a killed run started again reuses those already trained).
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

import advkit
from advkit._files import atomic_write_text
from advkit.attacks import attack_batched, create
from advkit.data import load as load_data
from advkit.evaluate.metrics import predict
from advkit.models import load as load_model
from advkit.models.checkpoint import CheckpointError
from advkit.models.generator import load_generator, save_generator
from advkit.models.universal import load_universal, save_universal
from advkit.progress import ProgressFn, report
from advkit.reproduce.cross_domain_report import aggregate_rows, write_run
from advkit.reproduce.cross_domain_setup import (
    EPS_NOTE,
    FULL,
    QUICK,
    Artefact,
    CrossDomainSetup,
    Method,
    apply_artefact,
    held_out,
    match_shape,
    target_models,
    validate_setup,
)
from advkit.reproduce.registry import Outcome, Reproduction, RunContext, register
from advkit.train.generator import train_generator
from advkit.train.universal import train_uap

log = logging.getLogger(__name__)

__all__ = ["CROSS_DOMAIN", "FULL", "QUICK", "CrossDomainSetup", "apply_artefact", "held_out", "match_shape",
           "reproduce_cross_domain", "validate_setup"]


def _want(kind: str, setup: CrossDomainSetup, dataset: str, host: str, seed: int) -> dict[str, Any]:
    if kind == "generator":
        return {"dataset": dataset, "eps": float(setup.eps), "epochs": setup.generator_epochs, "seed": seed,
                "limit": setup.generator_images, "loss": "relativistic", "spec": host}
    return {"dataset": dataset, "eps": float(setup.eps), "images": setup.uap_images, "max_passes": setup.uap_passes,
            "seed": seed, "subset": "random", "spec": host}


def _matches(card: dict[str, Any], want: dict[str, Any]) -> bool:
    spec = card["sources"][0]["spec"] if "sources" in card else card.get("source", {}).get("spec")
    return all(card.get(k) == v for k, v in want.items() if k != "spec") and spec == want["spec"]


def _artefact(kind: str, root: Path, setup: CrossDomainSetup, dataset: str, host: str, seed: int,
              progress: ProgressFn | None = None) -> Artefact:
    """The trained generator or universal perturbation: reused from ``root/artefacts`` when its card matches,
    else trained there (its steps or passes reported through ``progress``); returned with its attack
    (``generator:PATH`` / ``uap:PATH`` at the run's eps)."""
    folder = root / "artefacts" / ("generators" if kind == "generator" else "universal")
    path = folder / f"{dataset}-{host}-seed{seed}.safetensors"
    want = _want(kind, setup, dataset, host, seed)
    spec = f"{'generator' if kind == 'generator' else 'uap'}:{path}"
    if path.is_file():
        try:
            _, card = load_generator(path) if kind == "generator" else load_universal(path)
            if _matches(card, want):
                return Artefact(kind, dataset, host, seed, path, card, True, create(spec, eps=float(setup.eps)))
        except CheckpointError as e:
            log.warning("retraining %s: %s", path.name, e)
    folder.mkdir(parents=True, exist_ok=True)
    eval_images = min(setup.images, 1000)
    if kind == "generator":
        gen, card = train_generator([host], dataset, eps=setup.eps, epochs=setup.generator_epochs, seed=seed,
                                    limit=setup.generator_images, eval_images=eval_images, out=str(path),
                                    progress=progress)
        save_generator(gen, path, card)
    else:
        v, card = train_uap(host, dataset, eps=setup.eps, images=setup.uap_images, max_passes=setup.uap_passes,
                            seed=seed, subset="random", eval_images=eval_images, out=str(path), progress=progress)
        save_universal(v, path, card)
    _, card = load_generator(path) if kind == "generator" else load_universal(path)
    return Artefact(kind, dataset, host, seed, path, card, False, create(spec, eps=float(setup.eps)))


# ----------------------------------------------------------------------------------------------------- methods
def _methods(setup: CrossDomainSetup, dataset: str, residual: dict[str, bool]) -> list[Method]:
    out = []
    for kind in ("generator", "uap"):
        for d in (dataset, *[e for e in setup.datasets if e != dataset]):
            out += [Method(f"{kind}:{d}:{h}", kind, d, h) for h in setup.hosts]
    out += [Method(f"ifgsm:{dataset}:{s}", "ifgsm", dataset, s) for s in setup.surrogates]
    out += [Method(f"sgm:{dataset}:{s}", "sgm", dataset, s) for s in setup.surrogates if residual[s]]
    out.append(Method("noise", "noise", "-", "-"))
    return out


def _is_residual(model: nn.Module) -> bool:
    card = getattr(model, "card", None) or {}
    if card.get("connections"):
        return card["connections"] in ("residual", "dense")
    from advkit.backprop import find_connections

    return bool(find_connections(model))


# ----------------------------------------------------------------------------------------------------- the run
def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def reproduce_cross_domain(out: str | Path, setup: CrossDomainSetup = FULL, *, command: str = "",
                           progress: ProgressFn | None = None) -> dict[str, Any]:
    """Run the cross-domain study into ``out`` and return ``results.json``'s content. The run folder's rule
    (refusal, resume, ``--force``) is :data:`CROSS_DOMAIN`'s (:meth:`advkit.reproduce.registry.Reproduction.run`);
    trained artefacts in ``out/artefacts`` whose cards match are reused.

    Args:
        progress: ``progress(stage, done, total, detail)``: the stages ``artefacts`` (training) and ``evaluate``.

    Raises:
        ValueError: a bad setup (see :func:`validate_setup`) or a model that cannot be loaded; raised before any
            file is written.
    """
    root = Path(out)
    validate_setup(setup)
    t_start = time.perf_counter()
    ds = setup.datasets
    targets = {d: target_models(setup, d) for d in ds}
    for d in ds:
        if not held_out(setup, targets[d]):
            raise ValueError(f"every {d} target is a host or a surrogate ({', '.join(targets[d])}), so nothing would "
                             f"measure transfer: add targets that the attacker does not hold")
    models: dict[str, dict[str, nn.Module]] = {d: {} for d in ds}
    for d in ds:   # every model the run needs, loaded before anything is written
        for name in dict.fromkeys((*targets[d], *setup.hosts, *setup.surrogates)):
            try:
                models[d][name] = load_model(name, dataset=d)
            except (ValueError, FileNotFoundError) as e:
                raise ValueError(f"{d}: cannot load model {name!r}: {e}") from e
    residual = {s: all(_is_residual(models[d][s]) for d in ds) for s in setup.surrogates}
    samples: dict[str, dict[int, Any]] = {d: {k: load_data(d, "test", limit=setup.images, subset="random", seed=k)
                                              for k in setup.seeds} for d in ds}
    if (root / "results.json").exists():
        (root / "results.json").unlink()
    root.mkdir(parents=True, exist_ok=True)
    manifest = _manifest(setup, models, samples, command, status="running", artefacts=[], seconds=None)
    atomic_write_text(root / "manifest.json", json.dumps(manifest, indent=2, default=str) + "\n")

    arts: dict[tuple[str, str, str, int], Artefact] = {}
    t0 = time.perf_counter()
    todo = [(kind, d, h, k) for k in setup.seeds for d in ds for h in setup.hosts for kind in ("generator", "uap")]
    for i, (kind, d, h, k) in enumerate(todo):
        report(progress, "artefacts", i, len(todo), f"{kind} on {d} for {h} (seed {k})")
        arts[(kind, d, h, k)] = _artefact(kind, root, setup, d, h, k, progress)
    report(progress, "artefacts", len(todo), len(todo))
    train_seconds = time.perf_counter() - t0

    rows: list[dict[str, Any]] = []
    attacker = set(setup.hosts) | set(setup.surrogates)
    t0 = time.perf_counter()
    steps = [(d, k) for d in ds for k in setup.seeds]
    for d in ds:
        methods = _methods(setup, d, residual)
        for k in setup.seeds:
            data = samples[d][k]
            x, y = data.x, data.y
            clean = {t: predict(models[d][t], x) for t in targets[d]}
            report(progress, "evaluate", steps.index((d, k)), len(steps),
                   f"{d}, seed {k}: {len(methods)} methods on {len(targets[d])} targets")
            for m in methods:
                x_adv = _craft(m, setup, models[d], arts, x, y, k)
                linf = float((x_adv - x).abs().amax()) if len(x) else 0.0
                for t in targets[d]:
                    pred = predict(models[d][t], x_adv)
                    ok = clean[t] == y
                    rows.append({"dataset": d, "method": m.id, "kind": m.kind, "relation": m.relation(d),
                                 "trained_on": m.trained_on, "host": m.host, "seed": k, "target": t,
                                 "white_box": m.kind != "noise" and m.trained_on == d and m.host == t,
                                 "held_out": t not in attacker,
                                 "n": len(y), "fooled": int((pred != y).sum()), "correct": int(ok.sum()),
                                 "fooled_correct": int(((pred != y) & ok).sum()), "linf_max": linf})
    report(progress, "evaluate", len(steps), len(steps))
    eval_seconds = time.perf_counter() - t0

    result = aggregate_rows(setup, targets, rows)
    result["meta"] = {
        "setup": {**asdict(setup), "targets": targets}, "eps_note": EPS_NOTE if setup.eps == 0.2 else None,
        "data_notes": {d: samples[d][setup.seeds[0]].note for d in ds},
        "test_sizes": {d: len(samples[d][setup.seeds[0]].y) for d in ds},
        "train_seconds": round(train_seconds, 1), "eval_seconds": round(eval_seconds, 1),
        "seconds": round(time.perf_counter() - t_start, 1), "command": command,
        "advkit_version": advkit.__version__, "torch_version": torch.__version__,
        "artefacts": [a.record(root) for a in arts.values()],
    }
    result["rows"] = rows
    write_run(root, result, arts, samples, setup, models)
    manifest = _manifest(setup, models, samples, command, status="finished",
                         artefacts=result["meta"]["artefacts"], seconds=result["meta"]["seconds"])
    atomic_write_text(root / "manifest.json", json.dumps(manifest, indent=2, default=str) + "\n")
    atomic_write_text(root / "results.json", json.dumps(result, indent=2, allow_nan=True, default=str) + "\n")
    return result


def _craft(m: Method, setup: CrossDomainSetup, models: dict[str, nn.Module],
           arts: dict[tuple[str, str, str, int], Artefact], x: torch.Tensor, y: torch.Tensor, seed: int
           ) -> torch.Tensor:
    eps = float(setup.eps)
    if m.kind in ("generator", "uap"):
        return apply_artefact(arts[(m.kind, m.trained_on, m.host, seed)].attack, models[m.host], x, y)
    if m.kind == "noise":
        return attack_batched(create("noise", eps=eps), next(iter(models.values())), x, y, seed=seed).x_adv
    kwargs: dict[str, Any] = {"eps": eps, "steps": setup.steps}
    if m.kind == "sgm":
        kwargs["gamma"] = "auto"
    return attack_batched(create(m.kind, **kwargs), models[m.host], x, y, seed=seed).x_adv


def _manifest(setup: CrossDomainSetup, models: dict[str, dict[str, nn.Module]], samples: dict[str, dict[int, Any]],
              command: str, *, status: str, artefacts: list[dict[str, Any]], seconds: float | None
              ) -> dict[str, Any]:
    mods = {d: {n: {"arch": (getattr(m, "card", {}) or {}).get("arch"),
                    "sha256": (getattr(m, "card", {}) or {}).get("sha256"),
                    "test_accuracy": (getattr(m, "card", {}) or {}).get("test_accuracy"),
                    "command": (getattr(m, "card", {}) or {}).get("command")} for n, m in ms.items()}
            for d, ms in models.items()}
    data = {d: {"source": s[setup.seeds[0]].source, "note": s[setup.seeds[0]].note,
                "samples": {str(k): {"indices_sha256": _sha(v.indices) if v.indices is not None else None,
                                     "images_sha256": _sha(v.images)} for k, v in s.items()}}
            for d, s in samples.items()}
    return {"status": status, "study": "cross-domain", "advkit_version": advkit.__version__,
            "torch_version": torch.__version__, "python": sys.version.split()[0], "platform": platform.platform(),
            "command": command, "setup": {**asdict(setup), "targets": {d: list(v) for d, v in setup.targets.items()}},
            "models": mods, "data": data, "artefacts": artefacts, "seconds": seconds,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


# ----------------------------------------------------------------------------------------------------- aggregation


def _work(out: Path, setup: CrossDomainSetup, run: RunContext) -> Outcome:
    # the domains' targets the run does not measure are dropped (the quick variant names both default domains)
    setup = replace(setup, targets={d: m for d, m in setup.targets.items() if d in setup.datasets})
    r = reproduce_cross_domain(out, setup, command=run.command, progress=run.progress)
    return Outcome(None, [f"- {f}" for f in r["findings"]] + [f"finished in {r['meta']['seconds']:.0f} s"], r)


CROSS_DOMAIN = register(Reproduction(
    "cross-domain", "The seeds' cross-domain experiment (after Naseer et al. 2019): generators and universal "
                    "perturbations trained on one dataset's hosts, measured on another's models.",
    CrossDomainSetup, {f.name: getattr(QUICK, f.name) for f in fields(QUICK) if getattr(QUICK, f.name) !=
                       getattr(FULL, f.name)}, _work, keep=("artefacts",)))
