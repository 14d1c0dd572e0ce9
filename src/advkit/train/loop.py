"""Deterministic training of zoo architectures: :func:`train` (the recipe is :class:`advkit.train.Recipe`).

Everything random (initialisation, shuffling, augmentation) comes from one seed; weights and optimiser stay float32
under bf16 autocast. With ``recipe.adversarial`` set, each step minimises the mixed objective of
:func:`advkit.train.adversarial.adversarial_objective`.
"""

from __future__ import annotations

import logging
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import advkit
from advkit.data import Dataset, describe_selection, get_spec, load, subset_indices
from advkit.models.checkpoint import save_checkpoint
from advkit.models.frozen import frozen_eval
from advkit.models.registry import get_arch
from advkit.models.wrapper import Classifier
from advkit.progress import ProgressFn
from advkit.train.adversarial import (
    adversarial_objective,
    craft_adversarial,
    fgsm_accuracy,
    load_training_generator,
    robust_accuracy,
)
from advkit.train.fit import check_model_fits
from advkit.train.recipe import OBJECTIVES, PAPERS, Recipe, card_recipe_notes, train_command

log = logging.getLogger(__name__)

__all__ = ["NO_FLIP", "TrainingDivergedError", "accuracy", "augment_batch", "bf16_supported", "load_static_models",
           "train"]

NO_FLIP = {"mnist"}


def augment_batch(x: torch.Tensor, pad: int, flip: bool, g: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding ``pad`` and (if ``flip``) random horizontal flip, per sample.

    Args:
        x: ``(N, C, H, W)`` pixels.
        pad: padding in pixels on each side.
        flip: flip each image left-right with probability 0.5.
        g: the generator all randomness comes from.
    """
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h))  # (N, H)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w))  # (N, W)
    if flip:
        do = torch.rand(n, generator=g) < 0.5
        cols = torch.where(do.view(n, 1), cols.flip(1), cols)
    idx_r = rows.view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * pad)
    out = padded.gather(2, idx_r)
    idx_c = cols.view(n, 1, 1, w).expand(n, x.shape[1], h, w)
    return out.gather(3, idx_c)


def _param_groups(net: torch.nn.Module, wd: float) -> list[dict[str, Any]]:
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for p in net.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on pixels ``x`` ``(N, C, H, W)`` and labels ``y``."""
    correct = 0
    dev = next(model.parameters()).device
    with frozen_eval(model):
        for i in range(0, len(y), batch_size):
            pred = model(x[i:i + batch_size].to(dev)).argmax(1).cpu()
            correct += int((pred == y[i:i + batch_size]).sum())
    return correct / max(len(y), 1)


def bf16_supported() -> bool:
    """Whether bf16 autocast is worth it on this CPU (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def load_static_models(specs: list[str], dataset: str) -> list[Classifier]:
    """The static pre-trained models of ensemble adversarial training (Tramer et al. 2018), loaded and checked to
    fit ``dataset``: FGSM on them uses its labels, so input shape, classes and training dataset must match.

    Raises:
        ValueError: a model that cannot be loaded or does not fit, naming it and what differs.
    """
    from advkit.models import load as load_model

    models = [load_model(s, dataset=dataset) for s in specs]
    for s, m in zip(specs, models, strict=True):
        check_model_fits(m, s, dataset, "static model", same_classes=True)
    return models


class TrainingDivergedError(ValueError):
    """The training loss became NaN or infinite; nothing was written."""


def train(arch: str, dataset: str = "fashion-mnist", *, recipe: Recipe | None = None, seed: int = 0,
          out: str | Path | None = None, name: str | None = None, data_dir: str | None = None,
          progress: ProgressFn | None = None,
          on_epoch: Callable[[int, Classifier], None] | None = None,
          train_data: Dataset | None = None, test_data: Dataset | None = None,
          command: str | None = None, robust_images: int = 1000, train_split: str = "train",
          val_split: str | None = None, device: str = "cpu") -> tuple[Classifier, dict[str, Any]]:
    """Train ``arch`` on ``dataset`` from ``seed`` and optionally write ``out`` (``.safetensors`` + card).

    Args:
        arch: a registered architecture name.
        dataset: a registered dataset name.
        recipe: hyper-parameters; defaults to :class:`Recipe`.
        seed: seeds weight initialisation, shuffling and augmentation.
        out: where to write the checkpoint (a ``.safetensors`` path), or ``None``.
        name: the model's name in its card (defaults to ``arch``).
        progress: :data:`advkit.progress.ProgressFn`, called after every optimiser step as ``("epoch E/EPOCHS",
            steps done in this epoch, steps per epoch, "loss L")`` (``L`` the batch's loss, 4 decimals).
        on_epoch: a snapshot hook, not progress: called as ``(epochs_done, model)`` after every epoch with the model
            itself (to evaluate or save it); training mode and gradients are restored afterwards, so the callback may
            evaluate or even freeze the model.
        train_data: the preloaded training split (otherwise loaded from ``dataset``).
        test_data: the preloaded test split (otherwise loaded from ``dataset``).
        command: the command line recorded in the card (default: :func:`train_command`).
        robust_images: adversarial training: test images (class-balanced) the card's PGD-20 robust accuracy is
            measured on.
        train_split: the rows trained on: ``"train"`` (all), or a range such as ``"train[:50000]"`` (the JSMA
            paper's LeNet: the first 50,000, the last 10,000 held out).
        val_split: rows held out for validation (e.g. ``"train[50000:]"``); the card records their accuracy as
            ``validation_accuracy``. Refused when they overlap the training rows.
        device: ``"cpu"`` (default), ``"cuda"`` / ``"cuda:N"``, or ``"auto"`` (a GPU when one is visible). Batches
            are drawn and augmented on the CPU from the seed, then moved, so the data order is the same on every
            device; the arithmetic (and so the weights) differs between devices. The checkpoint is saved from CPU.

    Returns:
        The trained, frozen classifier and its card. With ``recipe.adversarial`` set, each step minimises the
        mixed objective of :func:`adversarial_objective`, and the card gains ``adversarial_training`` (the
        settings, the objective, the paper, how examples were crafted), ``fgsm_test_accuracy`` (accuracy on FGSM
        examples at the training eps crafted against the final model) and ``robust_test_accuracy`` (under PGD, 20
        steps, one random restart, at the training eps, with its interval).

    Raises:
        ValueError: an unknown dataset or architecture, a static model (ensemble adversarial training) made for
            other data (input shape, classes or training dataset), before any data is loaded; too few images for
            one batch; a bad device. TrainingDivergedError: the loss became NaN or infinite.
    """
    recipe = recipe or Recipe()
    adv = recipe.adversarial
    spec = get_spec(dataset)
    if not spec.classes or spec.loader is not None:  # image folders (imagenet too): no fixed image size
        raise ValueError(f"{dataset!r} has no fixed classes or image size; advkit trains on fashion-mnist, mnist or "
                         f"cifar10")
    arch_spec = get_arch(arch)
    static = load_static_models(adv["static"], dataset) if adv is not None and adv["attack"] == "ensemble" else []
    perturber = (load_training_generator(adv, dataset, spec.shape) if adv is not None
                 and adv["attack"] == "generator" else None)
    tr = train_data or load(dataset, train_split, data_dir=data_dir)
    te = test_data or load(dataset, "test", data_dir=data_dir)
    va = None
    if val_split is not None:
        va = load(dataset, val_split, data_dir=data_dir)
        if va.split.split("[")[0] == tr.split.split("[")[0] and tr.indices is not None and va.indices is not None \
                and bool(torch.isin(va.indices, tr.indices).any()):
            raise ValueError(f"the validation rows {val_split!r} overlap the training rows {train_split!r}; hold out "
                             f"a disjoint range, e.g. --train-split 'train[:50000]' --val-split 'train[50000:]'")
    c, h, w = spec.shape
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be cpu, cuda, cuda:N or auto, got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu, cuda, cuda:N or auto, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: no GPU is visible to torch {torch.__version__}; use --device cpu")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = arch_spec.build(c, len(spec.classes), h)
    model = Classifier(net, spec.mean, spec.std, spec.shape, len(spec.classes), name=name or arch).to(dev)
    model.train()
    nesterov = recipe.nesterov and recipe.momentum > 0
    opt = torch.optim.SGD(_param_groups(model.net, recipe.weight_decay), lr=recipe.lr, momentum=recipe.momentum,
                          nesterov=nesterov)
    n = len(tr)
    steps = n // recipe.batch_size
    if steps == 0:
        raise ValueError(f"{n} training images make no full batch of {recipe.batch_size}; use a smaller batch")
    sched: torch.optim.lr_scheduler.LRScheduler | None = None
    if recipe.schedule == "one-cycle":
        if recipe.epochs * steps < 5:  # the one-cycle schedule needs a few steps per phase
            raise ValueError(f"{recipe.epochs} epoch(s) of {steps} full batch(es) of {recipe.batch_size} from {n} "
                             f"training images is fewer than the 5 optimiser steps the one-cycle schedule needs; use "
                             f"more epochs, more images, a smaller batch or --schedule constant")
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=recipe.epochs * steps,
                                                    pct_start=0.25)
    use_bf16 = recipe.bf16 and (torch.cuda.is_bf16_supported() if dev.type == "cuda" else bf16_supported())
    static = [m.to(dev) for m in static]
    pad = 2 if h <= 28 else 4
    flip = dataset not in NO_FLIP
    images = tr.images
    labels = tr.y
    t0 = time.time()
    for epoch in range(recipe.epochs):
        perm = torch.randperm(n, generator=g)
        for step in range(steps):
            idx = perm[step * recipe.batch_size:(step + 1) * recipe.batch_size]
            xb = images[idx].float().div_(255.0)
            if recipe.augment:
                xb = augment_batch(xb, pad, flip, g)
            xb, yb = xb.to(dev, non_blocking=True), labels[idx].to(dev, non_blocking=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
                if adv is None:
                    loss = F.cross_entropy(model(xb), yb)
                else:
                    x_adv = craft_adversarial(model, xb, yb, adv, static=static, generator=g, perturber=perturber)
                    loss, _ = adversarial_objective(model, xb, yb, eps=adv["eps"], alpha=adv["alpha"],
                                                    craft=adv["craft"], x_adv=x_adv)
            if not torch.isfinite(loss.detach()):
                raise TrainingDivergedError(
                    f"{arch} on {dataset}: the loss became {float(loss.detach())} at epoch {epoch + 1}, step "
                    f"{step + 1} of {steps} (learning rate {recipe.lr:g}); training stopped and no checkpoint was "
                    f"written. Lower the learning rate (--lr, e.g. {recipe.lr / 10:g})"
                    + (" or turn off --bf16" if use_bf16 else ""))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            if progress is not None:
                progress(f"epoch {epoch + 1}/{recipe.epochs}", step + 1, steps, f"loss {float(loss.detach()):.4f}")
        log.info("%s epoch %d/%d done (%.0fs)", arch, epoch + 1, recipe.epochs, time.time() - t0)
        if on_epoch is not None:
            on_epoch(epoch + 1, model)
            model.train()  # undo an evaluation (or a freeze) inside the callback
            model.requires_grad_(True)
    train_seconds = time.time() - t0
    model.freeze()
    x_test = te.x
    acc = accuracy(model, x_test, te.y)
    card: dict[str, Any] = {
        "name": name or arch,
        "arch": arch,
        "family": arch_spec.family,
        "connections": arch_spec.connections,
        "dataset": dataset,
        "dataset_note": tr.note,
        "input_shape": list(spec.shape),
        "num_classes": len(spec.classes),
        "classes": list(spec.classes),
        "mean": list(spec.mean),
        "std": list(spec.std),
        "recipe": {**asdict(recipe), "bf16_used": use_bf16, "crop_pad": pad, "flip": flip,
                   **card_recipe_notes(recipe)},
        "seed": seed,
        "epochs": recipe.epochs,
        "train_split": tr.split,
        "train_size": n,
        "test_accuracy": round(acc, 4),
        "test_size": len(te),
        "train_seconds": round(train_seconds, 1),
        "device": dev.type if dev.type == "cpu" else f"{dev.type} ({torch.cuda.get_device_name(dev)})",
        "advkit_version": advkit.__version__,
        "torch_version": torch.__version__,
        "machine": platform.machine(),
        "command": command or train_command(arch, dataset, recipe, seed, out, train_split, val_split),
        "python": sys.version.split()[0],
    }
    if va is not None:
        card["validation_split"] = va.split
        card["validation_size"] = len(va)
        card["validation_accuracy"] = round(accuracy(model, va.x, va.y), 4)
    if adv is not None:
        method = adv["attack"]
        how = {"fgsm": "FGSM on the fly against the current parameters",
               "pgd": (f"PGD on the fly against the current parameters, {adv.get('steps')} steps of "
                       f"{adv.get('step_size', 0):g}{' from a random start' if adv.get('random_init') else ''}"),
               "ensemble": (f"FGSM from a source drawn per batch among the current model and the static models "
                            f"{', '.join(adv.get('static', []))}"),
               "generator": f"the trained generator {adv.get('generator')} (fixed), projected onto the eps ball"
               }[method]
        card["adversarial_training"] = {
            **adv,
            "objective": OBJECTIVES[method],
            "paper": PAPERS[method],
            "crafted": (f"{how}, {adv['craft']} mode ({'dropout off' if adv['craft'] == 'eval' else 'dropout on'}), "
                        f"gradient by torch.autograd.grad w.r.t. the input, "
                        f"{'bf16 autocast' if use_bf16 else 'float32'}, clipped to [0, 1], held constant in the "
                        f"parameter update"),
        }
        if method == "ensemble":
            card["adversarial_training"]["static_sha256"] = {s: m.card.get("sha256") for s, m in
                                                             zip(adv["static"], static, strict=True)}
        if perturber is not None:  # accuracy on the training generator's own samples of the test images
            gen_x = torch.cat([craft_adversarial(model, x_test[i:i + 1000], te.y[i:i + 1000], adv, generator=g,
                                                 perturber=perturber) for i in range(0, len(te), 1000)])
            card["generator_test_accuracy"] = round(accuracy(model, gen_x, te.y), 4)
        card["fgsm_test_accuracy"] = round(fgsm_accuracy(model, x_test, te.y, adv["eps"]), 4)
        card["fgsm_test_eps"] = adv["eps"]
        # the robust figure a card states: PGD, 20 steps, 1 random restart, on 1,000 class-balanced test images
        sub = subset_indices(len(te), robust_images, labels=te.y.numpy())
        card["robust_test_accuracy"] = {**robust_accuracy(model, x_test[sub], te.y[sub], adv["eps"], steps=20,
                                                          restarts=1), "images": describe_selection(
                                                              len(te), robust_images, "balanced", 0)}
    model.cpu()
    if out is not None:
        save_checkpoint(model, out, card)
    return model, card
