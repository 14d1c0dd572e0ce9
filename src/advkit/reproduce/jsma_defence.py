"""The JSMA paper's second defence: train on adversarial samples, then attack the retrained network again.

Papernot et al. 2016 (Section VI) propose training with adversarial samples as a defence and measure the
neighbour-pixel detector as the other. :func:`run_jsma_defence` does both, like for like:

1. against the clean LeNet (``mnist/lenet_50k``: the paper's first 50,000 training images), craft JSMA examples
   (the paper's settings, each image toward one other class drawn at random) and, for comparison, FGSM examples
   (Goodfellow et al.'s eps 0.25) on the same ``craft_images`` training images;
2. retrain the LeNet from the same seed and recipe on the 50,000 clean images plus the successful examples of
   one kind, labelled with their true class (a static augmentation; examples stored as 8-bit pixels, exact for
   JSMA's theta = +1 and rounded for FGSM);
2b. the third defence, the paper's proposal of training on generated samples: an AdvGAN generator (Xiao et al.,
   IJCAI 2018; :mod:`advkit.train.advgan`) trained against the clean LeNet on the same images at eps
   ``gan_eps``, then the LeNet retrained (same seed and recipe) on ``alpha * J(x) + (1 - alpha) * J(G(x))`` with
   the generator's samples made on the fly (alpha 0.5, ``advkit train --adversarial generator:PATH``);
3. attack each of the four networks with JSMA on ``eval_samples`` test images x 9 targets and report success,
   distortion and the detector's ROC AUC (clean vs JSMA, clean vs FGSM) before and after, and both detectors
   (neighbour-pixel, feature squeezing: :mod:`advkit.analysis.squeeze`) on JSMA, FGSM and transfer examples.

Every stage writes its product under ``out`` (the crafted sets, the checkpoints, each evaluation), so an
interrupted run resumes at the first stage it has not finished.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from advkit._files import atomic_write_text
from advkit.analysis.detector import detection_study
from advkit.analysis.squeeze import craft_transfer, detector_comparison
from advkit.attacks import attack_batched, create
from advkit.data import load as load_data
from advkit.data.registry import Dataset
from advkit.evaluate.metrics import wilson_interval
from advkit.models import load as load_model
from advkit.models.generator import save_generator
from advkit.progress import ProgressFn, report
from advkit.report.html import Document, Para, Table
from advkit.report.provenance import manifest
from advkit.report.run_report import save_document
from advkit.reproduce.jsma import reproduce_jsma
from advkit.reproduce.registry import Outcome, Reproduction, RunContext, register
from advkit.train import train as train_model
from advkit.train.adversarial import robust_accuracy
from advkit.train.generator import train_generator
from advkit.train.recipe import recipe_from_card

__all__ = ["JSMA_DEFENCE", "DefenceSettings", "run_jsma_defence"]

KINDS = ("jsma", "fgsm")
SURROGATE = "resnet20"  # the zoo surrogate the transfer attacks are crafted on (residual: SGM applies)
FGSM_EPS = 0.25  # Goodfellow et al.'s MNIST eps: the FGSM examples, the detectors' FGSM and the transfer attacks
PGD_EPS = FGSM_EPS  # PGD-20 robust accuracy at the reproduction's FGSM eps


def _craft(model: Any, kind: str, x: torch.Tensor, y: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """Examples of ``kind`` against ``model``: JSMA toward a random other class, or FGSM at eps 0.25."""
    if kind == "jsma":
        k = int(getattr(model, "num_classes", 10))
        g = torch.Generator().manual_seed(seed)
        target = (y + torch.randint(1, k, y.shape, generator=g)) % k  # uniform over the other classes
        r = attack_batched(create("jsma"), model, x, y, target=target, batch_size=256)
    else:
        target = torch.full_like(y, -1)
        r = attack_batched(create("fgsm", eps=FGSM_EPS), model, x, y, batch_size=512)
    return {"x_adv": torch.round(r.x_adv.clamp(0, 1) * 255).to(torch.uint8), "y": y, "target": target,
            "success": r.success.to(torch.uint8)}


def _detectors(model: Any, study: Any, ok: torch.Tensor, fgsm: torch.Tensor, dataset: str,
               transfer_images: int | None, cache: dict[str, Any]) -> dict[str, Any]:
    """Both detectors on JSMA's, FGSM's (eps 0.25) and the transfer attacks' examples (crafted once on the zoo
    ``SURROGATE`` over the first ``transfer_images`` clean images, kept in ``cache``), those that fool ``model``."""
    x, y = study.x, study.y
    if len(x) < 2:  # the threshold is set on one half of the clean images and checked on the other
        return {}
    n = len(x) if transfer_images is None else min(transfer_images, len(x))
    if "x" not in cache or not torch.equal(cache["x"], x[:n]):
        cache.update(x=x[:n], sets=craft_transfer(load_model(SURROGATE, dataset=dataset), x[:n], y[:n], eps=FGSM_EPS))
    jsma_y = torch.tensor([int(r["source"]) for r in study.records])[ok]
    sets = {"JSMA": (study.x_adv[ok], jsma_y), "FGSM": (fgsm, y),
            **{f"{a} from {SURROGATE}": (adv, y[:n]) for a, adv in cache["sets"].items()}}
    return detector_comparison(model, x, sets)


def _evaluate(model: Any, test: Dataset, samples: int, dataset: str = "mnist", transfer_images: int | None = None,
              cache: dict[str, Any] | None = None) -> dict[str, Any]:
    study = reproduce_jsma(model, test, samples)
    ok = torch.tensor([r["success"] for r in study.records], dtype=torch.bool)
    s = study.summary
    fgsm = create("fgsm", eps=FGSM_EPS)(model, study.x, study.y).x_adv  # both detectors' FGSM examples
    det = (detection_study(model, study.x, study.y, study.x_adv[ok], fgsm_eps=FGSM_EPS, fgsm_adv=fgsm) if ok.any()
           else {})
    k = int(ok.sum())
    pgd = robust_accuracy(model, study.x, study.y, PGD_EPS, steps=20, restarts=1)
    pgd["ci95"] = list(wilson_interval(pgd["correct"], pgd["n"]))
    return {"pgd": pgd, "clean_accuracy": s["clean_accuracy"], "success_rate": s["success_rate"],
            "success_ci95": list(wilson_interval(k, int(ok.numel()))), "n_attacks": int(ok.numel()),
            "distortion_successful": s["distortion_successful"], "detector": det,
            "squeeze": _detectors(model, study, ok, fgsm, dataset, transfer_images, {} if cache is None else cache)}


def run_jsma_defence(out: str | Path, *, model: str = "lenet_50k", dataset: str = "mnist",
                     craft_images: int = 10000, eval_samples: int = 300, seed: int = 0, command: str = "",
                     progress: ProgressFn | None = None, transfer_images: int | None = None, gan_epochs: int = 5,
                     gan_eps: float = 0.25) -> dict[str, Any]:
    """Run the defence study into ``out`` (resuming finished stages) and return its results.

    Args:
        out: the run folder.
        model: the clean network, trained on ``train_split`` of its card (e.g. ``train[:50000]``); it is
            retrained with its card's recipe and seed.
        dataset: its dataset.
        craft_images: class-balanced training images the examples are crafted on.
        eval_samples: test images (evenly spaced), each attacked toward the 9 other classes per network.
        seed: seeds the image choice and JSMA's random targets.
        transfer_images: the first this many evaluation images get transfer examples (``None``: all of them).
        gan_epochs: epochs of the AdvGAN generator's training on the ``craft_images`` images.
        gan_eps: the generator's L-inf budget (default the FGSM eps, 0.25).
        progress: ``progress(stage, done, total, detail)``: the stages ``craft``, ``retrain`` and ``evaluate``,
            each over its items (a stage finished earlier reports them done).

    Returns:
        ``{"models": {name: evaluation}, "training_sets": {...}, "settings": {...}}`` (also ``results.json``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clean = load_model(model, dataset=dataset)
    card = clean.card
    split = str(card.get("train_split") or "train")
    train = load_data(dataset, split)
    test = load_data(dataset, "test")
    pick = load_data(dataset, split, limit=craft_images, seed=seed)
    sets: dict[str, Any] = {}
    for i, kind in enumerate(KINDS):
        f = out / f"{kind}_train_examples.safetensors"
        report(progress, "craft", i, len(KINDS), f"{kind} examples on {len(pick)} training images against "
                                                  f"{clean.name}")
        if not f.is_file():
            save_file(_craft(clean, kind, pick.x, pick.y, seed), str(f))
        t = load_file(str(f))
        ok = t["success"].bool()
        sets[kind] = {"file": f.name, "crafted": int(ok.numel()), "successful": int(ok.sum()),
                      "success_rate": float(ok.float().mean())}
    recipe = recipe_from_card(card)
    report(progress, "craft", len(KINDS), len(KINDS))
    models = {"clean": clean}
    for i, kind in enumerate(KINDS):
        report(progress, "retrain", i, len(KINDS), f"{card.get('arch')} on {kind} examples")
        path = out / f"{card.get('arch', 'lenet')}_{kind}_augmented.safetensors"
        if not path.is_file():
            t = load_file(str(out / sets[kind]["file"]))
            ok = t["success"].bool()
            note = (f"{split} of {dataset} plus {int(ok.sum())} {kind.upper()} examples crafted against {clean.name} "
                    f"on {len(pick)} of its training images ({pick.selection}), labelled with their true class")
            data = replace(train, images=torch.cat([train.images, t["x_adv"][ok]]), y=torch.cat([train.y, t["y"][ok]]),
                           indices=None, note=note, split=f"{split}+{kind}")
            train_model(str(card.get("arch")), dataset, recipe=recipe, seed=int(card.get("seed", 0)),
                        out=path, name=f"{clean.name}_{kind}_augmented", train_data=data, test_data=test,
                        command=f"{command} (stage: retrain on {kind} examples)")
        models[kind] = load_model(str(path), dataset=dataset)
    gpath = out / "advgan_generator.safetensors"
    report(progress, "retrain", len(KINDS), len(KINDS) + 1, f"AdvGAN generator against {clean.name}")
    if not gpath.is_file():
        gen, gcard = train_generator([model], dataset, eps=gan_eps, epochs=gan_epochs, loss="advgan", seed=seed,
                                     train_data=pick, eval_images=1000, out=str(gpath))
        save_generator(gen, gpath, gcard)
    gcard = json.loads(gpath.with_suffix(".json").read_text())
    sets["advgan"] = {"file": gpath.name, "crafted": len(pick), "epochs": gan_epochs, "eps": gan_eps,
                      "fooling_rate_test": next(iter(gcard["fooling_rate_test"].values()))}
    path = out / f"{card.get('arch', 'lenet')}_advgan_trained.safetensors"
    if not path.is_file():
        train_model(str(card.get("arch")), dataset, seed=int(card.get("seed", 0)), out=path, train_data=train,
                    recipe=replace(recipe, adversarial={"attack": f"generator:{gpath}", "alpha": 0.5}),
                    name=f"{clean.name}_advgan_trained", test_data=test,
                    command=f"{command} (stage: train on the AdvGAN generator's samples)")
    models["advgan"] = load_model(str(path), dataset=dataset)
    report(progress, "retrain", len(KINDS) + 1, len(KINDS) + 1)
    results: dict[str, Any] = {}
    cache: dict[str, Any] = {}  # the transfer examples, crafted once for the three networks
    for i, (name, m) in enumerate(models.items()):
        f = out / f"eval_{name}.json"
        report(progress, "evaluate", i, len(models), f"JSMA on {m.name}: {eval_samples} test images x 9 targets")
        if not f.is_file():
            atomic_write_text(f, json.dumps(_evaluate(m, test, eval_samples, dataset, transfer_images, cache),
                                            indent=2) + "\n")
        results[name] = {"model": m.name, "test_accuracy": m.card.get("test_accuracy"), **json.loads(f.read_text())}
    payload = {"models": results, "training_sets": sets, "command": command,
               "provenance": manifest(command, inputs={f"{k}_examples": out / t["file"] for k, t in sets.items()}),
               "settings": {"model": model, "dataset": dataset, "train_split": split, "craft_images": craft_images,
                            "eval_samples": eval_samples, "seed": seed, "fgsm_eps": FGSM_EPS,
                            "transfer_images": transfer_images, "surrogate": SURROGATE, "gan_epochs": gan_epochs,
                            "gan_eps": gan_eps, "pgd_eps": PGD_EPS,
                            "jsma": "theta +1, Upsilon 14.5%, softmax saliency, feature pairs"}}
    report(progress, "evaluate", len(models), len(models))
    atomic_write_text(out / "results.json", json.dumps(payload, indent=2) + "\n")
    save_document(defence_document(payload), out)
    return payload


def defence_document(p: dict[str, Any]) -> Document:
    """The report: the crafted training sets, then each network's JSMA success, distortion and detector AUCs."""
    s = p["settings"]
    doc = Document(f"Training on adversarial samples as a defence against JSMA ({s['model']}, {s['dataset']})")
    doc.add(Para(f"JSMA ({s['jsma']}) and FGSM (eps {s['fgsm_eps']}) examples were crafted against the clean network "
                 f"on {s['craft_images']} of its training images; each retrained network learnt from "
                 f"`{s['train_split']}` plus the successful examples of one kind (true labels), with the clean "
                 f"network's recipe and seed. Each network is then attacked with JSMA on {s['eval_samples']} test "
                 f"images x 9 targets."),
            Table(["training set", "examples added"],
                  [[f"+ {kind.upper()}", f"{t['successful']} of {t['crafted']} crafted ({100 * t['success_rate']:.1f}% "
                                         f"succeeded)" if "successful" in t else
                    f"generated on the fly by an AdvGAN generator (eps {t['eps']:g}, {t['epochs']} epochs on "
                    f"{t['crafted']} images; fools {100 * t['fooling_rate_test']:.1f}% of test images), alpha 0.5"]
                   for kind, t in p["training_sets"].items()], align="ll"))
    rows = []
    for name, r in p["models"].items():
        lo, hi = r["success_ci95"]
        det = r.get("detector") or {}
        auc = {k: "-" if k not in det else f"{det[k]:.3f}" for k in ("auc_jsma", "auc_fgsm")}
        acc = r.get("test_accuracy")
        pgd = r.get("pgd")
        rows.append([f"{name} ({r['model']})", "-" if acc is None else f"{100 * acc:.2f}%",
                     f"{100 * r['success_rate']:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}]",
                     f"{100 * (r['distortion_successful'] or 0):.2f}%",
                     "-" if pgd is None else _pct(pgd["accuracy"], pgd["ci95"]), auc["auc_jsma"], auc["auc_fgsm"]])
    doc.add(Table(["network", "test accuracy", "JSMA success [95% CI]", "features modified (successful)",
                   f"PGD-20 robust accuracy (eps {s.get('pgd_eps', PGD_EPS):g}) [95% CI]",
                   "detector AUC clean vs JSMA", "clean vs FGSM"], rows))
    if (tr := transfer_table(p["models"])) is not None:
        doc.add(Para(f"Transfer success: the share of transfer examples (crafted on the zoo's {SURROGATE} at eps "
                     f"0.25) that fool each network, with Wilson 95% intervals."), tr)
    if (sq := squeeze_table(p["models"])) is not None:
        doc.add(Para("Feature squeezing (Xu et al., NDSS 2018; bit depth 1 and median 2x2, the paper's MNIST joint "
                     "detector) next to the neighbour-pixel detector, on the examples that fool each network: "
                     "ROC AUC with the Hanley-McNeil 95% interval, and the detection rate at the threshold set for 5% "
                     "false positives on half of the clean images, with the false-positive rate measured on the "
                     "other half (Wilson 95% intervals). Transfer examples are crafted on the zoo's "
                     f"{SURROGATE} at eps 0.25."), sq)
    if p.get("command"):
        doc.add(Para(f"Command: `{p['command']}`"))
    return doc


def _pct(rate: float | None, ci: list[float] | None) -> str:
    return "-" if rate is None or ci is None else f"{100 * rate:.1f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def transfer_table(models: dict[str, Any]) -> Table | None:
    """Each network's transfer success per transfer attack (from its detector comparison's fooling counts)."""
    rows = []
    for name, r in models.items():
        for attack, a in ((r.get("squeeze") or {}).get("attacks") or {}).items():
            if f"from {SURROGATE}" in attack and a.get("crafted"):
                k, n = int(a["n_adv"]), int(a["crafted"])
                rows.append([name, attack, f"{k} of {n}", _pct(k / n, list(wilson_interval(k, n)))])
    return Table(["network", "attack", "fooling / crafted", "transfer success [95% CI]"], rows,
                 align="llrr") if rows else None


def squeeze_table(models: dict[str, Any]) -> Table | None:
    """Both detectors' table (:func:`advkit.analysis.squeeze.detector_comparison` per network); ``None`` when no
    evaluation has one (a run from before feature squeezing was added)."""
    rows = []
    for name, r in models.items():
        for attack, a in ((r.get("squeeze") or {}).get("attacks") or {}).items():
            nb, auc = a.get("auc_neighbour"), a.get("auc")
            rows.append([name, attack, f"{a['n_adv']} of {a['crafted']}", "-" if nb is None else f"{nb:.3f}",
                         "-" if auc is None else f"{auc:.3f} [{a['auc_ci'][0]:.3f}, {a['auc_ci'][1]:.3f}]",
                         _pct(a.get("detection_rate"), a.get("detection_ci")),
                         _pct(a.get("fpr_measured"), a.get("fpr_ci"))])
    return Table(["network", "attack", "fooling / crafted", "neighbour-pixel AUC", "feature squeezing AUC [95% CI]",
                  "detected at 5% FPR [95% CI]", "FPR measured [95% CI]"], rows, align="lllrrrr") if rows else None


@dataclass(frozen=True)
class DefenceSettings:
    """The JSMA-defence reproduction's settings.

    Attributes:
        model: the clean network (retrained with its card's recipe and seed).
        dataset: its dataset.
        craft_images: training images the JSMA and FGSM examples are crafted on (>= 10).
        eval_samples: test images attacked toward the 9 other classes, per network.
        seed: seed of the image choice and JSMA's random targets.
        transfer_images: evaluation images the transfer attacks craft on (``None``: all ``eval_samples``).
        gan_epochs: epochs of the AdvGAN generator (the third defence) on the ``craft_images`` images (>= 1).
        gan_eps: its L-inf budget in pixel units (default FGSM's 0.25).
    """

    model: str = "lenet_50k"
    dataset: str = "mnist"
    craft_images: int = 10000
    eval_samples: int = 300
    seed: int = 0
    transfer_images: int | None = None
    gan_epochs: int = 5
    gan_eps: float = 0.25

    def __post_init__(self) -> None:
        if self.craft_images < 10:
            raise ValueError(f"craft_images must be greater than or equal to 10, got {self.craft_images}; "
                             f"--set craft_images=10000")
        if self.eval_samples < 1:
            raise ValueError(f"eval_samples must be greater than or equal to 1, got {self.eval_samples}; "
                             f"--set eval_samples=300")
        if self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed}; --set seed=0")
        if self.gan_epochs < 1:
            raise ValueError(f"gan_epochs must be >= 1, got {self.gan_epochs}; --set gan_epochs=5")
        if not 0 < self.gan_eps <= 1:
            raise ValueError(f"gan_eps must be in (0, 1] (pixel units), got {self.gan_eps}; --set gan_eps=0.25")
        if self.transfer_images is not None and self.transfer_images < 1:
            raise ValueError(f"transfer_images must be >= 1 or None (all), got {self.transfer_images}; "
                             f"--set transfer_images=10")


def _work(out: Path, s: DefenceSettings, run: RunContext) -> Outcome:
    r = run_jsma_defence(out, model=s.model, dataset=s.dataset, craft_images=s.craft_images,
                         eval_samples=s.eval_samples, seed=s.seed, command=run.command, progress=run.progress,
                         transfer_images=s.transfer_images, gan_epochs=s.gan_epochs, gan_eps=s.gan_eps)
    lines = []
    for name, m in r["models"].items():
        det = m.get("detector") or {}
        lines.append(f"{name}: JSMA success {100 * m['success_rate']:.2f}%, features modified "
                     f"{100 * (m['distortion_successful'] or 0):.2f}%, detector AUC "
                     f"{det.get('auc_jsma', float('nan')):.3f}")
    return Outcome(defence_document(r), lines, r)


JSMA_DEFENCE = register(Reproduction(
    "jsma-defence", "Papernot et al. 2016's second defence: retrain on JSMA (and FGSM, and AdvGAN-generated) "
                    "examples; JSMA success, distortion, PGD robust accuracy, transfer and the detectors before and "
                    "after.",
    DefenceSettings, {"craft_images": 1000, "eval_samples": 30, "transfer_images": 10, "gan_epochs": 2}, _work))
