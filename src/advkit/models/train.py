"""Deterministic training of zoo architectures.

Recipe: SGD with Nesterov momentum 0.9, weight decay 5e-4 (none on biases and norm layers), a one-cycle
learning-rate schedule, label smoothing 0, batch 128, random crops with padding (2 px for 28 px images, 4 px for
32 px) and horizontal flips (not for digits). bf16 autocast on CPUs that support it (weights and optimiser stay
float32). Everything random comes from one seed.

Adversarial training (Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015,
section 6): with ``Recipe(adversarial={"attack": "fgsm", "eps": 0.25, "alpha": 0.5})`` every step minimises the
paper's mixed objective ``alpha * J(x, y) + (1 - alpha) * J(x + eps * sign(grad_x J(x, y)), y)``, the FGSM examples
crafted on the fly against the current model (see :func:`adversarial_objective`).
"""

from __future__ import annotations

import logging
import math
import platform
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import advkit
from advkit.data import Dataset, get_spec, load
from advkit.models.checkpoint import save_checkpoint
from advkit.models.registry import get_arch
from advkit.models.wrapper import Classifier

log = logging.getLogger(__name__)

NO_FLIP = {"mnist"}

ADVERSARIAL_DEFAULTS: dict[str, Any] = {"attack": "fgsm", "eps": 0.25, "alpha": 0.5, "craft": "eval"}
OBJECTIVE = "alpha * J(x, y) + (1 - alpha) * J(clip01(x + eps * sign(grad_x J(x, y))), y)"


def adversarial_settings(spec: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Check and complete an adversarial-training specification (see :class:`Recipe`).

    Args:
        spec: ``None`` (plain training) or a mapping with any of ``attack`` (only ``"fgsm"``), ``eps`` (L-inf
            radius in pixel units of ``[0, 1]``, >= 0), ``alpha`` (weight of the clean term, in ``[0, 1]``) and
            ``craft`` (``"eval"``: craft with dropout off, the model the attacker faces at test time; ``"train"``:
            craft through the training-mode network, dropout on).

    Returns:
        ``None`` or a new dict with every key filled in from :data:`ADVERSARIAL_DEFAULTS`.

    Raises:
        ValueError: an unknown key or attack, or a value out of range.
    """
    if spec is None:
        return None
    unknown = set(spec) - set(ADVERSARIAL_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown adversarial-training setting(s) {sorted(unknown)}; known: "
                         f"{', '.join(ADVERSARIAL_DEFAULTS)}")
    out = {**ADVERSARIAL_DEFAULTS, **spec}
    if out["attack"] != "fgsm":
        raise ValueError(f"adversarial training supports attack 'fgsm' (Goodfellow et al. 2015), got "
                         f"{out['attack']!r}")
    for key, lo, hi in (("eps", 0.0, math.inf), ("alpha", 0.0, 1.0)):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
            raise ValueError(f"adversarial {key} must be a finite number in [{lo}, {hi}], got {v!r}")
        out[key] = float(v)
    if out["craft"] not in ("eval", "train"):
        raise ValueError(f"adversarial craft must be 'eval' or 'train', got {out['craft']!r}")
    return out


SCHEDULES = ("one-cycle", "constant")
"""Learning-rate schedules: one-cycle (peak ``lr``, warm-up over the first quarter, then annealed) or constant
``lr`` throughout (the JSMA and distillation papers' MNIST recipe)."""


SCHEDULE_NOTES = {"one-cycle": "one-cycle (pct_start 0.25)", "constant": "constant"}


@dataclass(frozen=True)
class Recipe:
    """Training hyper-parameters (recorded in the model card).

    Attributes:
        adversarial: ``None`` for plain training, or the adversarial-training settings of Goodfellow et al. 2015,
            e.g. ``{"attack": "fgsm", "eps": 0.25, "alpha": 0.5}`` (the paper's MNIST values); missing keys are
            filled in by :func:`adversarial_settings` when the recipe is built.
        schedule: one of :data:`SCHEDULES`. With ``"constant"``, a run of N epochs is exactly the first N epochs
            of a longer run from the same seed, so per-epoch snapshots (``on_epoch``) are reproducible.
        nesterov: Nesterov momentum (only when ``momentum > 0``); the papers' recipes use plain momentum.
    """

    epochs: int = 5
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = True
    bf16: bool = True
    optimizer: str = "sgd"
    adversarial: dict[str, Any] | None = None
    schedule: str = "one-cycle"
    nesterov: bool = True

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not self.weight_decay >= 0.0:
            raise ValueError(f"weight decay must be >= 0, got {self.weight_decay!r}")
        object.__setattr__(self, "adversarial", adversarial_settings(self.adversarial))


def fgsm_craft(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """FGSM (Goodfellow et al. 2015, eq. 3): ``clip01(x + eps * sign(grad_x J(theta, x, y)))``, in the model's
    current mode and precision context.

    The gradient comes from :func:`torch.autograd.grad` with respect to the input only, so no parameter's
    ``.grad`` is touched. ``J`` is the mean cross-entropy (its sign equals that of the summed loss's gradient).

    Args:
        model: a classifier taking pixels ``(N, C, H, W)`` in ``[0, 1]``.
        x: pixels ``(N, C, H, W)`` in ``[0, 1]``.
        y: labels ``(N,)``.
        eps: L-inf radius in pixel units.

    Returns:
        The adversarial batch ``(N, C, H, W)``, detached, in ``[0, 1]``.
    """
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(xg), y)
        (grad,) = torch.autograd.grad(loss, xg)
    return (x.detach() + eps * grad.sign()).clamp_(0.0, 1.0)


def adversarial_objective(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float,
                          craft: str = "eval") -> tuple[torch.Tensor, torch.Tensor]:
    """The adversarial training objective of Goodfellow et al. 2015 (section 6) for one batch.

    ``J~(theta, x, y) = alpha * J(theta, x, y) + (1 - alpha) * J(theta, x + eps * sign(grad_x J(theta, x, y)), y)``
    with ``J`` the mean cross-entropy. The FGSM example is crafted against the current parameters (on the fly,
    as in the paper), clipped to ``[0, 1]`` and then held constant: the parameter gradient flows through the
    network's two evaluations, not through the crafting. Crafting uses :func:`torch.autograd.grad` on the input
    only, so parameters' ``.grad`` are untouched until the caller back-propagates the returned loss.

    Args:
        model: the classifier being trained (pixels ``(N, C, H, W)`` in ``[0, 1]`` in, logits out), in the mode
            the two loss terms are computed in (train mode during training).
        x: pixels ``(N, C, H, W)`` in ``[0, 1]``.
        y: labels ``(N,)``.
        eps: FGSM radius in pixel units (the paper: 0.25 on MNIST).
        alpha: weight of the clean term (the paper: 0.5).
        craft: ``"eval"`` crafts with the model switched to eval mode (dropout off; the mode is restored even on
            error), the full-strength FGSM an attacker uses at test time; ``"train"`` crafts through the model as
            it is (with dropout, input dropout leaves about a fifth of the pixels unperturbed).

    Returns:
        ``(loss, x_adv)``: the scalar objective (with a graph to the parameters) and the FGSM batch.
    """
    if craft not in ("eval", "train"):
        raise ValueError(f"craft must be 'eval' or 'train', got {craft!r}")
    if craft == "eval":
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            x_adv = fgsm_craft(model, x, y, eps)
        finally:
            for m, mode in modes:
                m.training = mode
    else:
        x_adv = fgsm_craft(model, x, y, eps)
    clean = F.cross_entropy(model(x), y)
    adv = F.cross_entropy(model(x_adv), y)
    return alpha * clean + (1.0 - alpha) * adv, x_adv


def card_recipe_notes(recipe: Recipe) -> dict[str, Any]:
    """How a card records the recipe's schedule and the momentum actually used (Nesterov only with momentum)."""
    return {"schedule": SCHEDULE_NOTES[recipe.schedule], "nesterov": recipe.nesterov and recipe.momentum > 0}


def train_command(arch: str, dataset: str, recipe: Recipe, seed: int, out: str | Path | None = None) -> str:
    """The ``advkit train`` command line that reproduces a training run (recorded in the card).

    Adversarial training maps to ``--adversarial-eps EPS --adversarial-alpha ALPHA`` (and
    ``--adversarial-craft train`` when not the default).
    """
    parts = ["advkit", "train", arch, "--dataset", dataset, "--epochs", str(recipe.epochs), "--lr", f"{recipe.lr:g}",
             "--batch-size", str(recipe.batch_size), "--seed", str(seed)]
    default = Recipe()
    if recipe.momentum != default.momentum:
        parts += ["--momentum", f"{recipe.momentum:g}"]
    if recipe.weight_decay != default.weight_decay:
        parts += ["--weight-decay", f"{recipe.weight_decay:g}"]
    if recipe.schedule != default.schedule:
        parts += ["--schedule", recipe.schedule]
    if not recipe.nesterov:
        parts.append("--no-nesterov")
    if not recipe.bf16:
        parts.append("--no-bf16")
    if not recipe.augment:
        parts.append("--no-augment")
    adv = recipe.adversarial
    if adv is not None:
        parts += ["--adversarial-eps", f"{adv['eps']:g}", "--adversarial-alpha", f"{adv['alpha']:g}"]
        if adv["craft"] != ADVERSARIAL_DEFAULTS["craft"]:
            parts += ["--adversarial-craft", str(adv["craft"])]
    if out is not None:
        parts += ["--out", str(out)]
    return " ".join(parts)


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


def fgsm_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                  batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on FGSM examples of radius ``eps`` crafted against itself."""
    was = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    correct = 0
    try:
        for i in range(0, len(y), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            x_adv = fgsm_craft(model, xb, yb, eps)
            with torch.no_grad():
                correct += int((model(x_adv).argmax(1) == yb).sum())
    finally:
        model.train(was)
        for p, req in flags:
            p.requires_grad_(req)
    return correct / max(len(y), 1)


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on pixels ``x`` ``(N, C, H, W)`` and labels ``y``."""
    was = model.training
    model.eval()
    correct = 0
    try:
        for i in range(0, len(y), batch_size):
            correct += int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    finally:
        model.train(was)
    return correct / max(len(y), 1)


def bf16_supported() -> bool:
    """Whether bf16 autocast is worth it on this CPU (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def train(arch: str, dataset: str = "fashion-mnist", *, recipe: Recipe | None = None, seed: int = 0,
          out: str | Path | None = None, name: str | None = None, data_dir: str | None = None,
          on_step: Callable[[int, int, int, float], None] | None = None,
          on_epoch: Callable[[int, Classifier], None] | None = None,
          train_data: Dataset | None = None, test_data: Dataset | None = None,
          command: str | None = None) -> tuple[Classifier, dict[str, Any]]:
    """Train ``arch`` on ``dataset`` from ``seed`` and optionally write ``out`` (``.safetensors`` + card).

    Args:
        arch: a registered architecture name.
        dataset: a registered dataset name.
        recipe: hyper-parameters; defaults to :class:`Recipe`.
        seed: seeds weight initialisation, shuffling and augmentation.
        out: where to write the checkpoint (a ``.safetensors`` path), or ``None``.
        name: the model's name in its card (defaults to ``arch``).
        on_step: called as ``(epoch, step, steps_per_epoch, loss)`` after every optimiser step.
        on_epoch: called as ``(epochs_done, model)`` after every epoch, for snapshots; training mode and
            gradients are restored afterwards, so the callback may evaluate or even freeze the model.
        train_data, test_data: preloaded splits (otherwise loaded from ``dataset``).
        command: the command line recorded in the card (default: :func:`train_command`).

    Returns:
        The trained, frozen classifier and its card. With ``recipe.adversarial`` set, each step minimises the
        mixed objective of :func:`adversarial_objective`, and the card gains ``adversarial_training`` (the
        settings, the objective, how examples were crafted) and ``fgsm_test_accuracy`` (accuracy on FGSM examples
        at the training eps crafted against the final model).
    """
    recipe = recipe or Recipe()
    adv = recipe.adversarial
    spec = get_spec(dataset)
    if not spec.classes:
        raise ValueError(f"{dataset!r} has no fixed classes or image size; advkit trains on fashion-mnist, mnist or "
                         f"cifar10")
    arch_spec = get_arch(arch)
    tr = train_data or load(dataset, "train", data_dir=data_dir)
    te = test_data or load(dataset, "test", data_dir=data_dir)
    c, h, w = spec.shape
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = arch_spec.build(c, len(spec.classes), h)
    model = Classifier(net, spec.mean, spec.std, spec.shape, len(spec.classes), name=name or arch)
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
    use_bf16 = recipe.bf16 and bf16_supported()
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
            yb = labels[idx]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                if adv is None:
                    loss = F.cross_entropy(model(xb), yb)
                else:
                    loss, _ = adversarial_objective(model, xb, yb, eps=adv["eps"], alpha=adv["alpha"],
                                                    craft=adv["craft"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            if on_step is not None:
                on_step(epoch, step, steps, float(loss.detach()))
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
        "train_size": n,
        "test_accuracy": round(acc, 4),
        "test_size": len(te),
        "train_seconds": round(train_seconds, 1),
        "advkit_version": advkit.__version__,
        "torch_version": torch.__version__,
        "machine": platform.machine(),
        "command": command or train_command(arch, dataset, recipe, seed, out),
        "python": sys.version.split()[0],
    }
    if adv is not None:
        card["adversarial_training"] = {
            **adv,
            "objective": OBJECTIVE,
            "paper": "Goodfellow, Shlens & Szegedy 2015, Explaining and Harnessing Adversarial Examples, section 6",
            "crafted": (f"FGSM on the fly against the current parameters, {adv['craft']} mode "
                        f"({'dropout off' if adv['craft'] == 'eval' else 'dropout on'}), gradient by "
                        f"torch.autograd.grad w.r.t. the input, {'bf16 autocast' if use_bf16 else 'float32'}, "
                        f"clipped to [0, 1], held constant in the parameter update"),
        }
        card["fgsm_test_accuracy"] = round(fgsm_accuracy(model, x_test, te.y, adv["eps"]), 4)
        card["fgsm_test_eps"] = adv["eps"]
    if out is not None:
        save_checkpoint(model, out, card)
    return model, card
