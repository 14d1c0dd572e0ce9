"""Reproducing Wu et al., "Skip Connections Matter" (ICLR 2020) on the Fashion-MNIST zoo.

``reproduce_sgm(out)`` runs three studies into ``out/table``, ``out/gamma-sweep`` and ``out/eps-sweep`` and writes
a combined report to ``out/report.md`` / ``out/report.html``:

* **table**: the paper's attack table: from the ResNet and DenseNet sources (shipped checkpoints whose
  architecture is a plain ResNet or a DenseNet), PGD (the authors' "PGD" is I-FGSM: no random start), TI, MI, DI,
  SGM, SGM+MI and SGM+DI against every other shipped architecture; the paper's schedule (eps 16/255, 10 steps of
  2/255) and decays (gamma 0.2 for ResNet sources, 0.5 for DenseNet sources); 5 seeds. One more row, ``sgm-auto``,
  is SGM at advkit's own default decay for the source (its model card's ``sgm_gamma``, chosen on held-out images).
* **gamma sweep**: SGM at gamma 0.1 ... 1.0 (gamma 1 is I-FGSM exactly) against I-FGSM.
* **eps sweep**: I-FGSM, MI, SGM and SGM+MI at eps 4/255 ... 32/255 (step eps/8, the paper's ratio).

The sweeps reuse the table's finished cells where they are the same computation (same attack, settings, seed,
images and models), so e.g. the gamma sweep's I-FGSM and SGM at the source's default gamma are not recomputed.

The paper's numbers are ImageNet numbers on 50- to 200-layer networks; the report sets them beside ours by role
(ResNet source, DenseNet source, VGG / DenseNet / ResNet / SE-Net target) and compares gains over PGD, not levels.
Each seed attacks ``n`` images drawn from a pool of ``2n`` that every model classifies correctly, so the spread
over seeds covers the choice of images as well as the attacks' randomness.

``quick=True`` is a smoke-sized version (one source, four targets, 100 images, one seed; 33 s measured on two idle
CPU cores, 887 s when five other processes shared them); the report states what it leaves out.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advkit.models import adversarially_trained, read_card, shipped
from advkit.progress import ProgressFn
from advkit.report.html import Document, Figure, Heading, Para, Table
from advkit.report.run_report import build_report, load_run, save_document
from advkit.report.tables import text_matrix
from advkit.reproduce.registry import Outcome, Reproduction, RunContext, register
from advkit.study.config import apply_overrides, load_config
from advkit.study.errors import RunExistsError
from advkit.study.runner import run_study
from advkit.study.runstate import RunDir

log = logging.getLogger(__name__)

__all__ = ["PAPER", "SGM", "SgmReproduction", "SgmSettings", "reproduce_sgm", "sgm_configs"]

# The authors' results (success %, eps 16/255, mean of 5 runs): (paper source, paper target, attack, value).
PAPER: list[tuple[str, str, str, float]] = [
    *[("ResNet-152", t, a, v) for a, vals in (("ifgsm", (45.03, 51.49, 29.35)), ("ti", (54.59, 63.77, 41.89)),
                                              ("mi", (65.42, 75.79, 53.07)), ("di", (74.01, 77.81, 57.49)),
                                              ("sgm", (79.90, 81.56, 61.83)))
      for t, v in zip(("VGG19", "DenseNet-201", "SE154"), vals, strict=True)],
    *[("DenseNet-201", t, a, v) for a, vals in (("ifgsm", (57.61, 59.84, 39.78)), ("mi", (75.09, 76.39, 64.38)),
                                                ("di", (78.11, 78.18, 61.75)), ("sgm", (82.66, 86.65, 72.03)))
      for t, v in zip(("VGG19", "ResNet-152", "SE154"), vals, strict=True)],
]
# Which of our architectures plays each paper model's role.
ROLES = {"VGG19": ("vgg11_bn",), "DenseNet-201": ("densenet_bc40",), "SE154": ("se_resnet20",),
         "ResNet-152": ("resnet110", "resnet56", "resnet20")}
ATTACKS: list[dict[str, Any]] = [
    {"name": "ifgsm"}, {"name": "ti", "settings": {"ti_kernel": 5}}, {"name": "mi"}, {"name": "di"},
    {"name": "sgm"}, {"name": "sgm+mi"}, {"name": "sgm+di"},
    # advkit's own default: the source card's sgm_gamma (chosen on held-out images), not the paper's decay
    {"name": "sgm", "label": "sgm-auto", "settings": {"gamma": "auto"}},
]
GAMMA = {"residual": 0.2, "dense": 0.5}


@dataclass
class SgmReproduction:
    """What :func:`reproduce_sgm` returns: the run directories, the combined report and a text matrix."""

    out: Path
    runs: dict[str, Path]
    report: dict[str, Path]
    matrix: str
    seconds: float


def _zoo(dataset: str, models_dir: str | Path | None) -> list[tuple[str, dict[str, Any]]]:
    """``(spec, card)`` of every checkpoint available: the shipped zoo, or the ``.safetensors`` in ``models_dir``."""
    paths = sorted(Path(models_dir).glob("*.safetensors")) if models_dir is not None else shipped(dataset)
    out = []
    for p in paths:
        card = read_card(p)
        out.append((str(p) if models_dir is not None else p.stem, card))
    return out


def _depth(card: dict[str, Any]) -> int:
    """The depth in an architecture's name (``resnet56`` -> 56; 0 when it has none)."""
    digits = "".join(ch for ch in str(card.get("arch", "")).split("_")[0] if ch.isdigit())
    return int(digits) if digits else 0


def _pick_sources(zoo: list[tuple[str, dict[str, Any]]], quick: bool) -> list[str]:
    """The sources chosen automatically: plainly trained models only (an adversarially trained twin, such as
    ``resnet20_ensadv``, resists its own white-box attack and would make the table look as if the attacks failed).
    Quick: the shallowest plain ResNet (the fastest), else a DenseNet; full: the deepest plain ResNet and the first
    DenseNet. Ties are broken by name, so the choice never depends on the order the files are listed in."""
    plain = [(s, c) for s, c in zoo if not adversarially_trained(c)]
    res = sorted(((s, c) for s, c in plain
                  if str(c.get("arch", "")).startswith("resnet") and c.get("connections") == "residual"),
                 key=lambda sc: (_depth(sc[1]), sc[0]))
    dense = sorted(s for s, c in plain if c.get("connections") == "dense")
    if quick:
        return [res[0][0]] if res else dense[:1]
    deepest = [s for s, c in res if _depth(c) == _depth(res[-1][1])][:1] if res else []
    return deepest + dense[:1]


def sgm_configs(quick: bool = False, dataset: str = "fashion-mnist", *, models_dir: str | Path | None = None,
                sources: list[str] | None = None, targets: list[str] | None = None, seeds: list[int] | None = None,
                n: int | None = None, overrides: dict[str, Any] | None = None,
                robust_targets: bool | None = None) -> dict[str, dict[str, Any]]:
    """The three experiment configs (``table``, ``gamma-sweep``, ``eps-sweep``) as plain dicts; ``overrides``
    (dotted keys allowed) are applied to all three.

    Sources chosen automatically are plainly trained models (see :func:`_pick_sources`); targets chosen
    automatically include the adversarially trained models only when ``robust_targets`` asks for them (default:
    in the full study, which reports them in their own section as the paper does, and not in the quick one).
    Models named in ``sources`` / ``targets`` are taken as they are.

    Raises:
        ValueError: no ResNet or DenseNet checkpoint is available as a source.
    """
    zoo = _zoo(dataset, models_dir)
    cards = {s: c for s, c in zoo}
    src = sources or _pick_sources(zoo, quick)
    if not src:
        have = ", ".join(s for s, _ in zoo) or "none"
        raise ValueError(f"no ResNet or DenseNet checkpoint for {dataset} to use as a source (available: {have}); "
                         f"train one, e.g. `python scripts/train_zoo.py resnet20 densenet_bc40`, or pass sources=")
    if robust_targets is None:  # the full table attacks the robust twins too, as the paper does; quick does not
        robust_targets = not quick
    tg = targets or [s for s, c in zoo if robust_targets or not adversarially_trained(c)]
    if quick and not targets:  # the source, plus up to four others, favouring different families and fast ones
        order = ["vgg11_bn", "densenet_bc40", "resnet56", "se_resnet20", "lenet", "mlp", "linear", "maxout"]
        rank = {a: i for i, a in enumerate(order)}
        others = sorted((s for s in tg if s not in src), key=lambda s: rank.get(str(cards[s].get("arch")), 99))
        tg = [*src, *others[:4]]
    seeds = seeds or ([0] if quick else [0, 1, 2, 3, 4])
    n = n or (100 if quick else 1000)
    # each seed draws its n images from a pool of 2n, so the spread over seeds includes the choice of images
    common: dict[str, Any] = {"dataset": dataset, "sources": src, "targets": tg, "steps": 10, "seeds": seeds,
                              "gamma": GAMMA, "sample": {"n": n, "pool": 2 * n, "only_correct": True, "seed": 0},
                              "batch_size": 100 if quick else 250, "baseline": "ifgsm"}
    mode = "quick" if quick else "full"
    table = {**common, "title": f"SGM reproduction ({mode}): attack table", "attacks": ATTACKS, "eps": ["16/255"],
             "alpha": "2/255", "reference": _reference(src, tg, cards)}
    gammas = [0.2, 0.5, 0.8, 1.0] if quick else [0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0]
    gamma = {**common, "title": f"SGM reproduction ({mode}): gamma sweep", "eps": ["16/255"], "alpha": "2/255",
             "attacks": ["ifgsm", "sgm"] + ([] if quick else ["sgm+mi"]), "gamma": gammas,
             "seeds": seeds[:1] if quick else seeds[:3]}
    eps = {**common, "title": f"SGM reproduction ({mode}): eps sweep", "alpha": "eps/8",
           "eps": ["8/255", "16/255", "32/255"] if quick else ["4/255", "8/255", "16/255", "24/255", "32/255"],
           "attacks": ["ifgsm", "sgm"] if quick else ["ifgsm", "mi", "sgm", "sgm+mi"],
           "seeds": seeds[:1] if quick else seeds[:3]}
    out = {k: apply_overrides(c, overrides) for k, c in (("table", table), ("gamma-sweep", gamma), ("eps-sweep", eps))}
    for c in out.values():
        load_config(c)  # validate now, before any work
    return out


def _name(spec: str, cards: dict[str, dict[str, Any]]) -> str:
    """The name a model has in the records (its card's name, else the file's stem)."""
    return str(cards.get(spec, {}).get("name") or Path(spec).stem)


def _reference(sources: list[str], targets: list[str], cards: dict[str, dict[str, Any]]) -> dict[str, Any]:
    arch = {s: str(cards.get(s, {}).get("arch", s)) for s in {*sources, *targets}}

    def ours(paper_model: str, exclude: str) -> str | None:
        for a in ROLES.get(paper_model, ()):
            hit = [m for m in targets if arch[m] == a and m != exclude]
            if hit:
                return hit[0]
        return None

    rows = []
    for ps, pt, atk, val in PAPER:
        role = "dense" if ps.startswith("DenseNet") else "residual"
        src = [s for s in sources if cards.get(s, {}).get("connections") == role]
        if not src:
            continue
        tgt = ours(pt, src[0]) or "mean"
        rows.append({"paper_source": ps, "paper_target": pt, "attack": atk, "value": val,
                     "source": _name(src[0], cards), "target": tgt if tgt == "mean" else _name(tgt, cards)})
    return {"citation": "Wu et al., ICLR 2020 (ImageNet, eps 16/255, 10 steps, 5,000 images, mean of 5 runs).",
            "note": "Our models are small Fashion-MNIST networks: compare the gains over PGD (I-FGSM), not the "
                    "levels. 'mean' = mean transfer over our targets when no analogue of the paper's target is "
                    "in the study.", "baseline": "ifgsm", "eps": "16/255", "rows": rows}


def _quick_note(cfgs: dict[str, dict[str, Any]], zoo_size: int) -> str:
    t = cfgs["table"]
    return (f"Quick mode: {t['sample']['n']} images instead of 1,000 per seed, seed(s) {t['seeds']} instead of 5 (no "
            f"spread over seeds; each cell's Wilson interval is in table/results/success.csv), one source "
            f"({', '.join(t['sources'])}) instead of a ResNet and a DenseNet, {len(t['targets']) - 1} targets of the "
            f"{zoo_size - 1} other shipped models, a gamma sweep over {cfgs['gamma-sweep']['gamma']} (SGM only) and "
            f"an eps sweep over {cfgs['eps-sweep']['eps']} (I-FGSM and SGM only). Run without --quick for "
            f"the full study.")


def reproduce_sgm(out: str | Path, quick: bool = False, *, force: bool = False, backend: str = "local",
                  address: str | None = None, progress: ProgressFn | None = None, command: str = "",
                  dataset: str = "fashion-mnist", models_dir: str | Path | None = None,
                  sources: list[str] | None = None, targets: list[str] | None = None,
                  seeds: list[int] | None = None, n: int | None = None,
                  overrides: dict[str, Any] | None = None, robust_targets: bool | None = None) -> SgmReproduction:
    """Reproduce the SGM paper's table, gamma sweep and eps sweep on the Fashion-MNIST zoo.

    Args:
        out: the output folder (three run directories and the combined report).
        quick: the smoke-sized version (one source, a few targets, 100 images, one seed).
        force: overwrite finished runs in ``out``; without it a finished run is kept and reused, an unfinished one
            resumes.
        backend: ``"local"`` or ``"ray"``; ``address``: the Ray cluster.
        progress: ``progress(stage, done, total, detail)``; stages are prefixed with the run's name.
        command: the command line, for the manifests.
        dataset: the zoo's dataset.
        models_dir: use the checkpoints in this folder instead of the shipped zoo.
        sources, targets, seeds, n: override the choices described in :func:`sgm_configs`.
        robust_targets: add the adversarially trained models to the automatically chosen targets (default: in
            the full study only).
        overrides: settings applied to all three experiments (``{"sample.only_correct": False}``).

    Returns:
        A :class:`SgmReproduction`.
    """
    t0 = time.perf_counter()
    out = Path(out)
    cfgs = sgm_configs(quick, dataset, models_dir=models_dir, sources=sources, targets=targets, seeds=seeds, n=n,
                       overrides=overrides, robust_targets=robust_targets)
    if quick:
        cfgs["table"]["notes"] = [_quick_note(cfgs, len(_zoo(dataset, models_dir)))]
    runs: dict[str, Path] = {}
    docs: dict[str, Document] = {}
    for name, cfg in cfgs.items():
        run_dir = out / name
        rd = RunDir(run_dir)
        if rd.finished and not force:
            if rd.config_digest() != load_config(cfg).digest():
                raise RunExistsError(f"{run_dir} holds a finished run of a different configuration (quick vs full?); "
                                     f"pass force=True (--force) to overwrite it, or choose another output folder")
            log.info("%s: finished run found; reusing it", run_dir)
        else:
            def stage(s: str, done: int, total: int | None, detail: str, _n: str = name) -> None:
                if progress is not None:
                    progress(f"{_n}: {s}", done, total, detail)

            run_study(cfg, run_dir, force=force, backend=backend, address=address, progress=stage,
                      command=command, reuse=list(runs.values()))
        docs[name] = build_report(run_dir)
        save_document(docs[name], run_dir)
        runs[name] = run_dir
    records, _, _ = load_run(runs["table"])
    robust = robust_section(records, dict(_zoo(dataset, models_dir)))
    report = _combined_report(out, runs, docs["table"], quick, robust)
    return SgmReproduction(out, runs, report, text_matrix(records, "16/255"), time.perf_counter() - t0)


def robust_section(records: dict[str, Any], cards: dict[str, dict[str, Any]], eps: str = "16/255") -> list[Any]:
    """The table's transfer against the adversarially trained targets, next to their plainly trained twins (the
    paper attacks ensemble-adversarially-trained ImageNet models the same way): success over all images with its
    pooled Wilson interval, and each attack's paired difference from I-FGSM averaged over seeds."""
    names = {spec: _name(spec, cards) for spec in cards}
    robust = [spec for spec, c in cards.items() if "adversarial_training" in c or "robust_test_accuracy" in c]
    targets = set(records["meta"]["targets"])
    robust = [r for r in robust if r in targets or names[r] in targets]
    if not robust:
        return []
    success = {(r["source"], r["attack"], r["target"]): r for r in records["summary"]
               if r["eps"] == eps and r["images"] == "float" and r["over"] == "all"}
    paired = {(r["source"], r["attack"], r["target"]): r for r in records.get("paired_summary", [])
              if r["eps"] == eps and r["baseline"] == "ifgsm"}
    rows = []
    for spec in robust:
        c = cards[spec]
        twin = next((s for s, t in cards.items() if t.get("arch") == c.get("arch") and s != spec
                     and "adversarial_training" not in t and "robust_test_accuracy" not in t), None)
        method = (c.get("adversarial_training") or {}).get("attack", "adversarial")
        for tgt in [spec] + ([twin] if twin is not None and (twin in targets or names[twin] in targets) else []):
            for (src, atk, t), r in sorted(success.items()):
                if t != names[tgt] or src == t:
                    continue
                d = paired.get((src, atk, t))
                diff = "-" if d is None else f"{100 * d['difference_mean']:+.1f}" + (
                    "" if d.get("t_low") is None else f" [{100 * d['t_low']:+.1f}, {100 * d['t_high']:+.1f}]")
                rows.append([f"{names[tgt]}{' (' + method + '-trained)' if tgt == spec else ' (plain twin)'}", src,
                             atk, f"{100 * r['mean']:.1f} [{100 * r['pooled_low']:.1f}, {100 * r['pooled_high']:.1f}]",
                             diff])
    return [Heading("Robust targets"),
            Para("Transfer to the adversarially trained zoo members and to their plainly trained twins, at eps "
                 f"{eps}: success over all images in % (pooled Wilson interval) and each attack's paired difference "
                 "from I-FGSM in points (mean over seeds, t interval). The paper reports SGM's gains against "
                 "ensemble-adversarially-trained ImageNet models in the same way; compare gains, not levels."),
            Table(["target", "source", "attack", "success [95% CI]", "minus I-FGSM"], rows)]


def _combined_report(out: Path, runs: dict[str, Path], table: Document, quick: bool,
                     robust: list[Any] | None = None) -> dict[str, Path]:
    doc = Document(f"Skip Connections Matter (Wu et al., ICLR 2020) on Fashion-MNIST{' — quick' if quick else ''}")
    doc.add(Para("Three studies: the attack table (below), a gamma sweep and an eps sweep (further down); each has "
                 "its own full report in its folder (table/, gamma-sweep/, eps-sweep/)."))
    sweeps: list[Any] = []
    for name, fig, title in (("gamma-sweep", "success_vs_gamma.png", "Gamma sweep"),
                             ("eps-sweep", "success_vs_eps.png", "Eps sweep")):
        p = runs[name] / "figures" / fig
        if p.is_file():
            sweeps += [Heading(title), Figure(f"{name}/figures/{fig}", p.read_bytes(),
                                              f"{title}: see {name}/report.html for its tables and tests.")]
    for b in table.blocks:
        if isinstance(b, Heading) and b.text == "Provenance":  # the sweeps go before the table's provenance
            doc.add(*sweeps, *(robust or []))
            sweeps, robust = [], []
        doc.add(Figure(f"table/{b.path}", b.png, b.caption) if isinstance(b, Figure) else b)
    doc.add(*sweeps, *(robust or []))
    return save_document(doc, out)


@dataclass(frozen=True)
class SgmSettings:
    """The SGM reproduction's settings (see :func:`sgm_configs` for what is chosen when a setting is empty).

    Attributes:
        quick: the smoke-sized version (one source, a few targets, 100 images, one seed).
        dataset: the zoo's dataset.
        models_dir: use the checkpoints in this folder instead of the shipped zoo.
        sources, targets: the models (default: chosen from the zoo).
        seeds: the seeds (default: 5; quick: one).
        n: images per seed (default 1,000; quick: 100).
        robust_targets: also attack the adversarially trained models (default: in the full study only).
        backend: ``local`` or ``ray``; ``address``: the Ray cluster (not part of what is compared on resume).
    """

    quick: bool = False
    dataset: str = "fashion-mnist"
    models_dir: Path | None = None
    sources: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    n: int | None = None
    robust_targets: bool | None = None
    backend: str = "local"
    address: str | None = field(default=None)

    def __post_init__(self) -> None:
        if self.backend not in ("local", "ray"):
            raise ValueError(f"backend must be 'local' or 'ray', got {self.backend!r}; --set backend=local")
        if self.n is not None and self.n < 1:
            raise ValueError(f"n must be greater than or equal to 1 (images per seed), got {self.n}; --set n=100")
        if any(k < 0 for k in self.seeds):
            raise ValueError(f"seeds must be integers >= 0, got {list(self.seeds)}; --set seeds=0,1,2")


def _work(out: Path, s: SgmSettings, run: RunContext) -> Outcome:
    r = reproduce_sgm(out, s.quick, force=run.force, backend=s.backend, address=s.address, progress=run.progress,
                      command=run.command, dataset=s.dataset, models_dir=s.models_dir,
                      sources=list(s.sources) or None, targets=list(s.targets) or None,
                      seeds=list(s.seeds) or None, n=s.n, robust_targets=s.robust_targets)
    return Outcome(None, [r.matrix, f"finished in {r.seconds:.0f} s"], r)


SGM = register(Reproduction(
    "sgm", "Wu et al. 2020 (Skip Gradient Method) on the Fashion-MNIST zoo: the attack table, a gamma sweep and an "
           "eps sweep.", SgmSettings, {"quick": True}, _work, runtime=("backend", "address")))
