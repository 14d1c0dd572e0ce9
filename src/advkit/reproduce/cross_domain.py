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

import csv
import hashlib
import io
import json
import platform
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import advkit
from advkit._files import atomic_write_bytes, atomic_write_text
from advkit.attacks import attack_batched, create
from advkit.data import get_spec
from advkit.data import load as load_data
from advkit.evaluate.metrics import predict
from advkit.evaluate.stats import summarize_seeds
from advkit.models import load as load_model
from advkit.models import shipped
from advkit.models.checkpoint import CheckpointError
from advkit.models.generator import PerturbationGenerator, load_generator, project_linf, save_generator
from advkit.models.universal import load_universal, save_universal
from advkit.report import figures
from advkit.report.html import Code, Document, Figure, Heading, Para, Table
from advkit.study.errors import RunExistsError
from advkit.train.generator import train_generator
from advkit.train.universal import train_uap

__all__ = ["FULL", "QUICK", "CrossDomainSetup", "match_shape", "reproduce_cross_domain", "validate_setup"]

Say = Callable[[str], None]


@dataclass(frozen=True)
class CrossDomainSetup:
    """What a cross-domain run measures.

    Attributes:
        datasets: the domains; every host is trained on each and every artefact applied to each.
        hosts: models (zoo names, loaded in each domain) the generators and universal perturbations are trained on.
        surrogates: in-domain models I-FGSM (and, for those with skip connections, SGM) are crafted on.
        targets: per domain, the models measured; a domain not named gets every shipped classifier of it.
        eps: the L-inf budget, shared by every method and domain.
        seeds: training and sampling seeds (at least 3 for intervals worth the name).
        images: evaluation images per domain and seed (a random sample of the test split).
        generator_images, generator_epochs: the generators' training set (the first N training images) and passes.
        uap_images, uap_passes: the universal perturbations' training images (drawn per seed) and passes at most.
        steps: I-FGSM / SGM iterations (step eps / steps).
        resize: allow domains of different shapes (see the module docstring).
        quick: a smoke-sized run (the report says so).
    """

    datasets: tuple[str, ...] = ("fashion-mnist", "mnist")
    hosts: tuple[str, ...] = ("lenet", "resnet20")
    surrogates: tuple[str, ...] = ("lenet", "resnet20")
    targets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    eps: float = 0.2
    seeds: tuple[int, ...] = (0, 1, 2)
    images: int = 1000
    generator_images: int | None = 20000
    generator_epochs: int = 1
    uap_images: int = 200
    uap_passes: int = 3
    steps: int = 10
    resize: bool = False
    quick: bool = False


FULL = CrossDomainSetup()
QUICK = CrossDomainSetup(
    hosts=("lenet",), images=200, generator_images=2000, uap_images=50, uap_passes=2, quick=True,
    targets={"fashion-mnist": ("lenet", "resnet20", "vgg11_bn", "densenet_bc40", "mlp", "maxout"),
             "mnist": ("lenet", "resnet20", "lenet_subset", "maxout", "maxout_advtrain", "linear")})

EPS_NOTE = ("eps 0.2 is shared by both domains: Fashion-MNIST's usual budget is 0.1 and MNIST's 0.3, and at 0.1 the "
            "MNIST models resist even white-box I-FGSM (the shipped MNIST LeNet: 6.4%), while at 0.3 random noise "
            "alone fools most Fashion-MNIST models (86-88% on the residual ones), which leaves no room to see an "
            "attack above the control. 0.2 is the middle ground; pass --eps to measure another.")


# ----------------------------------------------------------------------------------------------------- validation
def _shape(dataset: str) -> tuple[int, int, int]:
    spec = get_spec(dataset)
    if spec.loader is not None:
        raise ValueError(f"{dataset}: the cross-domain study needs datasets of a fixed shape with shipped or named "
                         f"models (fashion-mnist, mnist, cifar10); image folders are not supported here")
    return tuple(int(v) for v in spec.shape)  # type: ignore[return-value]


def validate_setup(setup: CrossDomainSetup) -> None:
    """Raise ``ValueError`` naming the first problem, before any model, data or file is touched."""
    ds = setup.datasets
    if len(ds) < 2 or len(set(ds)) != len(ds):
        raise ValueError(f"give at least two different datasets (--datasets fashion-mnist,mnist), got {list(ds)}")
    shapes = {d: _shape(d) for d in ds}
    if len(set(shapes.values())) > 1 and not setup.resize:
        desc = ", ".join(f"{d} {'x'.join(map(str, s))}" for d, s in shapes.items())
        raise ValueError(f"the datasets differ in shape ({desc}): a generator or perturbation trained on one cannot "
                         f"be added to the other's images as is. Pass --resize to carry each host's perturbation "
                         f"to the other shape (bilinear; grey repeated to colour, colour averaged to grey), or "
                         f"compare datasets of one shape")
    for d, s in shapes.items():
        for e, t in shapes.items():
            if s[0] != t[0] and 1 not in (s[0], t[0]):
                raise ValueError(f"{d} has {s[0]} channels and {e} {t[0]}: only grey <-> colour (1 <-> 3) or equal "
                                 f"channel counts can be carried across")
    if isinstance(setup.eps, bool) or not isinstance(setup.eps, (int, float)) or not 0 < setup.eps <= 1:
        raise ValueError(f"eps must be in (0, 1] (an L-inf budget in pixel units, e.g. 0.2), got {setup.eps!r}")
    if not setup.seeds or len(set(setup.seeds)) != len(setup.seeds) or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in setup.seeds):
        raise ValueError(f"seeds must be distinct integers >= 0 (e.g. --seeds 0,1,2), got {list(setup.seeds)}")
    if not setup.hosts:
        raise ValueError("name at least one host model (--hosts lenet,resnet20)")
    for name in ("images", "generator_epochs", "uap_images", "uap_passes", "steps"):
        v = getattr(setup, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if setup.generator_images is not None and setup.generator_images < 1:
        raise ValueError(f"generator_images must be >= 1 (or None: the whole training split), got "
                         f"{setup.generator_images!r}")
    unknown = sorted(set(setup.targets) - set(ds))
    if unknown:
        raise ValueError(f"targets name datasets not in the run: {', '.join(unknown)} (datasets: {', '.join(ds)})")


def _targets(setup: CrossDomainSetup, dataset: str) -> tuple[str, ...]:
    if dataset in setup.targets:
        return tuple(setup.targets[dataset])
    names = tuple(p.stem for p in shipped(dataset))
    if not names:
        raise ValueError(f"{dataset} has no shipped models to measure; name them: targets={{'{dataset}': (...)}} "
                         f"(--target {dataset}=PATH.safetensors)")
    return names


# ----------------------------------------------------------------------------------------------------- carrying
def match_shape(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``t`` ``(N, C, H, W)`` carried to ``(N, *shape)``: grey repeated to colour or colour averaged to grey, then
    bilinear resizing; the identity when the shapes already agree."""
    c, h, w = (int(v) for v in shape)
    if t.shape[1] != c:
        if t.shape[1] == 1:
            t = t.expand(-1, c, -1, -1)
        elif c == 1:
            t = t.mean(1, keepdim=True)
        else:
            raise ValueError(f"cannot carry {t.shape[1]} channels to {c}")
    if tuple(t.shape[2:]) != (h, w):
        t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
    return t


@torch.no_grad()
def apply_generator(gen: PerturbationGenerator, x: torch.Tensor, eps: float, batch_size: int = 250) -> torch.Tensor:
    """The generator's adversarial images for ``x`` (any shape it can be carried from), within eps and ``[0, 1]``.

    With ``x`` of the generator's own shape this is exactly the ``generator:PATH`` attack's output."""
    shape = tuple(gen.input_shape)
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        if tuple(xb.shape[1:]) == shape:
            out.append(project_linf(gen(xb), xb, eps))
            continue
        xh = match_shape(xb, shape)
        delta = match_shape(project_linf(gen(xh), xh, eps) - xh, tuple(xb.shape[1:])).clamp(-eps, eps)
        out.append((xb + delta).clamp(0.0, 1.0))
    return torch.cat(out)


def apply_universal(v: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """``x + v`` (``v`` carried to ``x``'s shape), within eps and ``[0, 1]``: the ``uap:PATH`` attack's output."""
    vv = match_shape(v[None], tuple(x.shape[1:]))[0].clamp(-eps, eps)
    return (x + vv).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------------------------------- artefacts
@dataclass
class Artefact:
    kind: str           # "generator" | "uap"
    dataset: str        # the domain it was trained on
    host: str
    seed: int
    path: Path
    card: dict[str, Any]
    reused: bool
    obj: Any            # the generator, or the perturbation tensor

    def record(self, root: Path) -> dict[str, Any]:
        c = self.card
        return {"kind": self.kind, "dataset": self.dataset, "host": self.host, "seed": self.seed,
                "path": str(self.path.relative_to(root)), "sha256": c.get("sha256"), "reused": self.reused,
                "seconds": c.get("train_seconds", c.get("seconds")),
                "host_fooling_rate_test": (c["fooling_rate_test"] if self.kind == "uap"
                                           else next(iter(c["fooling_rate_test"].values()))),
                "command": c.get("command")}


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
              say: Say) -> Artefact:
    folder = root / "artefacts" / ("generators" if kind == "generator" else "universal")
    path = folder / f"{dataset}-{host}-seed{seed}.safetensors"
    want = _want(kind, setup, dataset, host, seed)
    if path.is_file():
        try:
            obj, card = load_generator(path) if kind == "generator" else load_universal(path)
            if _matches(card, want):
                return Artefact(kind, dataset, host, seed, path, card, True, obj)
        except CheckpointError as e:
            say(f"retraining {path.name}: {e}")
    folder.mkdir(parents=True, exist_ok=True)
    eval_images = min(setup.images, 1000)
    if kind == "generator":
        say(f"training the generator on {dataset} against {host} (seed {seed})")
        gen, card = train_generator([host], dataset, eps=setup.eps, epochs=setup.generator_epochs, seed=seed,
                                    limit=setup.generator_images, eval_images=eval_images, out=str(path))
        save_generator(gen, path, card)
    else:
        say(f"computing the universal perturbation on {dataset} for {host} (seed {seed})")
        v, card = train_uap(host, dataset, eps=setup.eps, images=setup.uap_images, max_passes=setup.uap_passes,
                            seed=seed, subset="random", eval_images=eval_images, out=str(path))
        save_universal(v, path, card)
    obj, card = load_generator(path) if kind == "generator" else load_universal(path)
    return Artefact(kind, dataset, host, seed, path, card, False, obj)


# ----------------------------------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class Method:
    id: str
    kind: str           # generator | uap | ifgsm | sgm | noise
    trained_on: str     # the domain the attacker's model or data came from ("-" for the control)
    host: str           # host / surrogate model name ("-" for the control)

    def relation(self, dataset: str) -> str:
        if self.kind == "noise":
            return "control"
        return "in-domain" if self.trained_on == dataset else "cross-domain"

    def label(self, dataset: str) -> str:
        if self.kind == "noise":
            return "random-sign noise"
        name = {"generator": "generator", "uap": "UAP", "ifgsm": "I-FGSM", "sgm": "SGM"}[self.kind]
        where = "" if self.trained_on == dataset else f"from {self.trained_on} "
        return f"{name} {where}on {self.host}"


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


def reproduce_cross_domain(out: str | Path, setup: CrossDomainSetup = FULL, *, force: bool = False, command: str = "",
                           say: Say | None = None) -> dict[str, Any]:
    """Run the cross-domain study into ``out`` and return ``results.json``'s content.

    Raises:
        RunExistsError: ``out`` holds a finished run and ``force`` is false.
        ValueError: a bad setup (see :func:`validate_setup`) or a model that cannot be loaded; raised before any
            file is written.
    """
    say = say or (lambda _msg: None)
    root = Path(out)
    validate_setup(setup)
    if (root / "results.json").exists() and not force:
        raise RunExistsError(f"{root} already holds a finished run (results.json); pass --force to overwrite it or "
                             f"choose another --out")
    t_start = time.perf_counter()
    ds = setup.datasets
    targets = {d: _targets(setup, d) for d in ds}
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
    if force and (root / "results.json").exists():
        (root / "results.json").unlink()
    root.mkdir(parents=True, exist_ok=True)
    manifest = _manifest(setup, models, samples, command, status="running", artefacts=[], seconds=None)
    atomic_write_text(root / "manifest.json", json.dumps(manifest, indent=2, default=str) + "\n")

    arts: dict[tuple[str, str, str, int], Artefact] = {}
    t0 = time.perf_counter()
    for k in setup.seeds:
        for d in ds:
            for h in setup.hosts:
                for kind in ("generator", "uap"):
                    arts[(kind, d, h, k)] = _artefact(kind, root, setup, d, h, k, say)
    train_seconds = time.perf_counter() - t0

    rows: list[dict[str, Any]] = []
    attacker = set(setup.hosts) | set(setup.surrogates)
    t0 = time.perf_counter()
    for d in ds:
        methods = _methods(setup, d, residual)
        for k in setup.seeds:
            data = samples[d][k]
            x, y = data.x, data.y
            clean = {t: predict(models[d][t], x) for t in targets[d]}
            say(f"{d}, seed {k}: {len(methods)} methods on {len(targets[d])} targets")
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
    eval_seconds = time.perf_counter() - t0

    result = _aggregate(setup, targets, rows)
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
    _write(root, result, arts, samples, setup)
    manifest = _manifest(setup, models, samples, command, status="finished",
                         artefacts=result["meta"]["artefacts"], seconds=result["meta"]["seconds"])
    atomic_write_text(root / "manifest.json", json.dumps(manifest, indent=2, default=str) + "\n")
    atomic_write_text(root / "results.json", json.dumps(result, indent=2, allow_nan=True, default=str) + "\n")
    return result


def _craft(m: Method, setup: CrossDomainSetup, models: dict[str, nn.Module],
           arts: dict[tuple[str, str, str, int], Artefact], x: torch.Tensor, y: torch.Tensor, seed: int
           ) -> torch.Tensor:
    eps = float(setup.eps)
    if m.kind == "generator":
        return apply_generator(arts[("generator", m.trained_on, m.host, seed)].obj, x, eps)
    if m.kind == "uap":
        return apply_universal(arts[("uap", m.trained_on, m.host, seed)].obj, x, eps)
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
def _summary(values: list[float], bounds: tuple[float, float] = (0.0, 1.0)) -> dict[str, Any]:
    """Mean and Student-t interval over the seeds; the interval is clipped to ``bounds`` (a rate cannot leave
    [0, 1], a difference of rates [-1, 1]), which a t interval over 3 seeds otherwise often does."""
    s = summarize_seeds(values)
    lo, hi = bounds
    return {"mean": s.mean, "low": None if s.low is None else max(s.low, lo),
            "high": None if s.high is None else min(s.high, hi), "std": s.std, "seeds": s.n, "per_seed": values}


def held_out(setup: CrossDomainSetup, targets: tuple[str, ...]) -> list[str]:
    """The targets of a domain that are neither a host nor a surrogate: every method's transfer mean is over
    these, so the rows of a domain's headline compare on one target set and none of it is white-box."""
    attacker = set(setup.hosts) | set(setup.surrogates)
    return [t for t in targets if t not in attacker]


def _aggregate(setup: CrossDomainSetup, targets: dict[str, tuple[str, ...]], rows: list[dict[str, Any]]
               ) -> dict[str, Any]:
    by: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["dataset"], r["method"], r["target"]), {})[r["seed"]] = r
    per_target = []
    for (d, m, t), seeds in by.items():
        rs = [seeds[k] for k in setup.seeds]
        per_target.append({
            "dataset": d, "method": m, "target": t, "kind": rs[0]["kind"], "relation": rs[0]["relation"],
            "trained_on": rs[0]["trained_on"], "host": rs[0]["host"], "white_box": rs[0]["white_box"],
            "all": _summary([r["fooled"] / max(r["n"], 1) for r in rs]),
            "clean_correct": _summary([r["fooled_correct"] / max(r["correct"], 1) for r in rs])})
    headline = []
    for d in setup.datasets:
        methods = list(dict.fromkeys(r["method"] for r in rows if r["dataset"] == d))
        cell = {(p["method"], p["target"]): p for p in per_target if p["dataset"] == d}
        for m in methods:
            tr = held_out(setup, targets[d])
            rec: dict[str, Any] = {"dataset": d, "method": m, "kind": cell[(m, tr[0])]["kind"],
                                   "relation": cell[(m, tr[0])]["relation"],
                                   "trained_on": cell[(m, tr[0])]["trained_on"], "host": cell[(m, tr[0])]["host"],
                                   "transfer_targets": tr}
            for over in ("all", "clean_correct"):
                per_seed = [sum(cell[(m, t)][over]["per_seed"][i] for t in tr) / len(tr)
                            for i in range(len(setup.seeds))]
                noise = [sum(cell[("noise", t)][over]["per_seed"][i] for t in tr) / len(tr)
                         for i in range(len(setup.seeds))]
                rec[over] = _summary(per_seed)
                rec[f"{over}_minus_noise"] = _summary([a - b for a, b in zip(per_seed, noise, strict=True)],
                                                      (-1.0, 1.0))
            wb = [t for t in targets[d] if cell[(m, t)]["white_box"]]  # the host itself, for in-domain methods
            rec["white_box"] = {t: cell[(m, t)]["all"] for t in wb}
            headline.append(rec)
    return {"per_target": per_target, "headline": headline, "findings": _findings(setup, headline)}


def _findings(setup: CrossDomainSetup, headline: list[dict[str, Any]]) -> list[str]:
    """Plain sentences: for each cross-domain method, above / below / indistinguishable from noise, and its gap
    to the in-domain method of the same kind and host."""
    out = []
    idx = {(h["dataset"], h["method"]): h for h in headline}
    for h in headline:
        if h["relation"] != "cross-domain":
            continue
        d, diff = h["dataset"], h["all_minus_noise"]
        name = f"{'generator' if h['kind'] == 'generator' else 'UAP'} from {h['trained_on']} on {h['host']}"
        pts = f"{100 * diff['mean']:+.1f} points"
        if diff["low"] is not None and diff["low"] > 0:
            verdict = f"transfers to {d} above the noise control ({pts}, 95% CI [{100 * diff['low']:+.1f}, " \
                      f"{100 * diff['high']:+.1f}])"
        elif diff["high"] is not None and diff["high"] < 0:
            verdict = f"does *worse* than random noise on {d} ({pts}, 95% CI [{100 * diff['low']:+.1f}, " \
                      f"{100 * diff['high']:+.1f}])"
        elif diff["low"] is None:
            verdict = f"{pts} against noise on {d} (one seed: no interval)"
        else:
            verdict = f"is indistinguishable from random noise on {d} ({pts}, 95% CI [{100 * diff['low']:+.1f}, " \
                      f"{100 * diff['high']:+.1f}])"
        own = idx.get((d, f"{h['kind']}:{d}:{h['host']}"))
        gap = ""
        if own is not None:
            gap = (f"; the in-domain {h['kind'] if h['kind'] == 'generator' else 'UAP'} on {h['host']} reaches "
                   f"{100 * own['all']['mean']:.1f}% against its {100 * h['all']['mean']:.1f}%")
        out.append(f"The {name} {verdict}{gap}.")
    return out


# ----------------------------------------------------------------------------------------------------- writing
ROW_FIELDS = ("dataset", "method", "kind", "relation", "trained_on", "host", "seed", "target", "white_box", "held_out",
              "n", "fooled", "correct", "fooled_correct", "linf_max")


def _csv(fields: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def _flat(p: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {k: p[k] for k in ("dataset", "method", "kind", "relation", "trained_on", "host") if k in p}
    if "target" in p:
        out.update(target=p["target"], white_box=p["white_box"])
    for k in keys:
        s = p[k]
        out.update({f"{k}_mean": s["mean"], f"{k}_low": s["low"], f"{k}_high": s["high"], f"{k}_std": s["std"]})
    return out


def _write(root: Path, result: dict[str, Any], arts: dict[tuple[str, str, str, int], Artefact],
           samples: dict[str, dict[int, Any]], setup: CrossDomainSetup) -> None:
    res = root / "results"
    res.mkdir(exist_ok=True)
    atomic_write_text(res / "rows.csv", _csv(ROW_FIELDS, result["rows"]))
    pt = [_flat(p, ("all", "clean_correct")) for p in result["per_target"]]
    atomic_write_text(res / "per_target.csv", _csv(tuple(pt[0]) if pt else ROW_FIELDS, pt))
    hl = [_flat(h, ("all", "clean_correct", "all_minus_noise", "clean_correct_minus_noise"))
          for h in result["headline"]]
    atomic_write_text(res / "headline.csv", _csv(tuple(hl[0]) if hl else ROW_FIELDS, hl))
    figs = root / "figures"
    figs.mkdir(exist_ok=True)
    pngs = {"perturbations.png": _gallery(arts, samples, setup)}
    for d in setup.datasets:
        pngs[f"transfer_{d}.png"] = _bars(result, d)
    for name, png in pngs.items():
        atomic_write_bytes(figs / name, png)
    doc = report(result, {n: p for n, p in pngs.items()})
    atomic_write_text(root / "report.md", doc.markdown())
    atomic_write_text(root / "report.html", doc.html())


def _gallery(arts: dict[tuple[str, str, str, int], Artefact], samples: dict[str, dict[int, Any]],
             setup: CrossDomainSetup) -> bytes:
    k0, eps = setup.seeds[0], float(setup.eps)
    pics = {d: samples[d][k0].x[:2] for d in setup.datasets}
    cols = ["UAP"] + [f"G on {d} #{i + 1}" for d in setup.datasets for i in range(len(pics[d]))]
    rows: list[tuple[str, list[torch.Tensor | None]]] = [
        ("images", [None] + [img for d in setup.datasets for img in pics[d]])]
    for d in setup.datasets:
        for h in setup.hosts:
            v = arts[("uap", d, h, k0)].obj
            gen = arts[("generator", d, h, k0)].obj
            deltas = [apply_generator(gen, pics[e], eps)[i] - pics[e][i]
                      for e in setup.datasets for i in range(len(pics[e]))]
            rows.append((f"{d}\n{h}", [match_shape(v[None], tuple(pics[d].shape[1:]))[0], *deltas]))
    return figures.perturbation_gallery(rows, cols, eps, f"Learned perturbations, seed {k0}, eps {eps:g} (grey = 0)")


_COLOURS = {"cross-domain": "tab:red", "in-domain": "tab:blue", "control": "tab:grey"}


def _bars(result: dict[str, Any], dataset: str) -> bytes:
    hs = [h for h in result["headline"] if h["dataset"] == dataset]
    noise = next((h for h in hs if h["kind"] == "noise"), None)
    meta_setup = result.get("meta", {}).get("setup", {})
    labels = [_label(h, dataset) for h in hs]
    return figures.interval_bars(labels, [h["all"]["mean"] for h in hs], [h["all"]["low"] for h in hs],
                                 [h["all"]["high"] for h in hs],
                                 f"{dataset}, eps {meta_setup.get('eps', '?')}: held-out targets (red: cross-domain, "
                                 f"blue: in-domain)", "mean untargeted success, all images (%), 95% t-interval",
                                 reference=noise["all"]["mean"] if noise else None, reference_label="noise",
                                 colours=[_COLOURS[h["relation"]] for h in hs])


def _label(h: dict[str, Any], dataset: str) -> str:
    return Method(h["method"], h["kind"], h["trained_on"], h["host"]).label(dataset)


def _ci(s: dict[str, Any], signed: bool = False) -> str:
    f = "{:+.1f}" if signed else "{:.1f}"
    if s["low"] is None:
        return f.format(100 * s["mean"])
    return f"{f.format(100 * s['mean'])} [{f.format(100 * s['low'])}, {f.format(100 * s['high'])}]"


def report(result: dict[str, Any], pngs: dict[str, bytes]) -> Document:
    """The run's report: setup, findings, the headline per domain, the per-target tables, the figures, the
    trained artefacts and the provenance."""
    meta = result["meta"]
    st = meta["setup"]
    doc = Document("Cross-domain transfer of host-model perturbations")
    if st["quick"]:
        doc.add(Para(f"**Quick run**: {st['images']} evaluation images per domain and seed, generators trained on "
                     f"{st['generator_images']} images, universal perturbations from {st['uap_images']} images, "
                     f"hosts {', '.join(st['hosts'])}, "
                     + ", ".join(f"{len(t)} {d} targets" for d, t in st["targets"].items())
                     + ". A smoke test of the pipeline; the full run (the default) is the measurement."))
    doc.add(Para(f"Domains: {', '.join(st['datasets'])}. eps {st['eps']:g} (L-inf, pixels in [0, 1]) for every "
                 f"method. Seeds {st['seeds']}: each seed trains its own generators (Naseer et al. 2019, "
                 f"relativistic loss, {st['generator_epochs']} epoch(s) on the first "
                 f"{st['generator_images'] or 'all'} training images) and universal perturbations (Moosavi-Dezfooli "
                 f"et al. 2017, {st['uap_images']} training images drawn with the seed, at most {st['uap_passes']} "
                 f"passes), and draws its own {st['images']} test images per domain. I-FGSM and SGM: "
                 f"{st['steps']} steps of eps/{st['steps']} on the in-domain surrogates {', '.join(st['surrogates'])} "
                 f"(SGM gamma from the card, else 0.2). Intervals: 95% Student t over the seeds."),
            Para("Success is untargeted: the target's label on the perturbed image differs from the true label, over "
                 "all images (clean errors count as successes, as in the noise control) or over the images the "
                 "target classified correctly. Transfer means are over the held-out targets of each domain, the "
                 "models that are neither a host nor a surrogate, so every row compares on the same targets; cells "
                 "where the target is the attacker's own model are in the per-target tables. Intervals are clipped "
                 "to the possible range."))
    if meta.get("eps_note"):
        doc.add(Para(meta["eps_note"]))
    for d, note in meta["data_notes"].items():
        if note:
            doc.add(Para(f"Note ({d}): {note}"))
    doc.add(Heading("What transfers across domains"))
    for f in result["findings"]:
        doc.add(Para(f))
    for d in st["datasets"]:
        hs = [h for h in result["headline"] if h["dataset"] == d]
        doc.add(Heading(f"Evaluated on {d}"))
        rows = []
        for h in hs:
            wb = "; ".join(f"{t} {_ci(s)}" for t, s in h["white_box"].items()) or "-"
            rows.append([_label(h, d), h["relation"], _ci(h["all"]), _ci(h["clean_correct"]),
                         "-" if h["kind"] == "noise" else _ci(h["all_minus_noise"], True), wb])
        doc.add(Table(["method", "relation", "transfer success, all (%)", "clean-correct (%)",
                       "minus noise, all (points)", "white-box cell (host = target)"], rows, align="llrrrl",
                      caption="Mean over the held-out targets: "
                              + (", ".join(hs[0]["transfer_targets"]) if hs else "-") + "."))
        name = f"transfer_{d}.png"
        doc.add(Figure(f"figures/{name}", pngs[name], f"{d}: mean transfer success with 95% intervals."))
        tg = st["targets"][d]
        cell = {(p["method"], p["target"]): p for p in result["per_target"] if p["dataset"] == d}
        methods = [h["method"] for h in hs]
        prow = []
        for m in methods:
            h = next(x for x in hs if x["method"] == m)
            prow.append([_label(h, d)] + [(f"*{100 * cell[(m, t)]['all']['mean']:.1f}*" if cell[(m, t)]["white_box"]
                                           else f"{100 * cell[(m, t)]['all']['mean']:.1f}") for t in tg])
        doc.add(Heading(f"Per target on {d} (success over all images, mean over seeds; *italic*: white-box)", 3),
                Table(["method", *tg], prow, align="l" + "r" * len(tg)))
    doc.add(Heading("Learned perturbations"),
            Figure("figures/perturbations.png", pngs["perturbations.png"],
                   "Each row: one host (training domain, model): its universal perturbation, then its generator's "
                   "perturbation on two images of each domain, after clipping to [0, 1]. Mid grey is 0, black -eps, "
                   "white +eps."))
    arows = [[a["kind"], a["dataset"], a["host"], str(a["seed"]), f"{100 * a['host_fooling_rate_test']:.1f}%",
              f"{a['seconds']:.0f}" if a["seconds"] is not None else "-", "reused" if a["reused"] else "trained",
              a["path"]] for a in meta["artefacts"]]
    doc.add(Heading("Trained generators and universal perturbations"),
            Table(["kind", "trained on", "host", "seed", "fools its host (test)", "seconds", "this run", "file"],
                  arows, align="lllrrrll"),
            Para("Each file has its card beside it (the command that reproduces it, data, eps, seed, hash); use it as "
                 "generator:PATH or uap:PATH in `advkit attack` or a transfer study."))
    doc.add(Heading("Provenance"),
            Code(f"advkit {meta['advkit_version']}, torch {meta['torch_version']}; training "
                 f"{meta['train_seconds']:.0f} s, evaluation {meta['eval_seconds']:.0f} s, total "
                 f"{meta['seconds']:.0f} s\n"
                 f"command: {meta['command'] or '-'}\n"
                 f"files: results/rows.csv, results/per_target.csv, results/headline.csv, results.json, figures/, "
                 f"artefacts/, manifest.json (model, data-sample and artefact hashes)"))
    return doc
