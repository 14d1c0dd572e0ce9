"""Deterministic training of zoo architectures.

Recipe: SGD with Nesterov momentum 0.9, weight decay 5e-4 (none on biases and norm layers), a one-cycle
learning-rate schedule, label smoothing 0, batch 128, random crops with padding (2 px for 28 px images, 4 px for
32 px) and horizontal flips (not for digits). bf16 autocast on CPUs that support it (weights and optimiser stay
float32). Everything random comes from one seed.
"""

from __future__ import annotations

import logging
import platform
import sys
import time
from collections.abc import Callable
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


@dataclass(frozen=True)
class Recipe:
    """Training hyper-parameters (recorded in the model card)."""

    epochs: int = 5
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = True
    bf16: bool = True
    optimizer: str = "sgd"


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
    decay, no_decay = [], []
    for p in net.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


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
        train_data, test_data: preloaded splits (otherwise loaded from ``dataset``).
        command: the command line recorded in the card.

    Returns:
        The trained, frozen classifier and its card.
    """
    recipe = recipe or Recipe()
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
    opt = torch.optim.SGD(_param_groups(model.net, recipe.weight_decay), lr=recipe.lr, momentum=recipe.momentum,
                          nesterov=True)
    n = len(tr)
    steps = n // recipe.batch_size
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
                loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if on_step is not None:
                on_step(epoch, step, steps, float(loss))
        log.info("%s epoch %d/%d done (%.0fs)", arch, epoch + 1, recipe.epochs, time.time() - t0)
    model.freeze()
    acc = accuracy(model, te.x, te.y)
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
                   "schedule": "one-cycle (pct_start 0.25)", "nesterov": True},
        "seed": seed,
        "epochs": recipe.epochs,
        "train_size": n,
        "test_accuracy": round(acc, 4),
        "test_size": len(te),
        "train_seconds": round(time.time() - t0, 1),
        "advkit_version": advkit.__version__,
        "torch_version": torch.__version__,
        "machine": platform.machine(),
        "command": command or " ".join(["advkit", "train", arch, "--dataset", dataset, "--epochs",
                                        str(recipe.epochs), "--seed", str(seed)]),
        "python": sys.version.split()[0],
    }
    if out is not None:
        save_checkpoint(model, out, card)
    return model, card
