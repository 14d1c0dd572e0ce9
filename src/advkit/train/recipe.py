"""Training recipes: the hyper-parameters a model card records, and the ``advkit train`` command that reproduces
them.

Default recipe: SGD with Nesterov momentum 0.9, weight decay 5e-4 (none on biases and norm layers), a one-cycle
learning-rate schedule, batch 128, random crops with padding and horizontal flips (not for digits), bf16 autocast
where the CPU supports it. ``Recipe(adversarial={"attack": "fgsm", "eps": 0.25, "alpha": 0.5})`` adds the
adversarial training of Goodfellow, Shlens & Szegedy 2015 (see :mod:`advkit.train.adversarial`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ADVERSARIAL_DEFAULTS", "OBJECTIVE", "SCHEDULES", "SCHEDULE_NOTES", "Recipe", "adversarial_settings",
           "card_recipe_notes", "train_command"]

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
