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

__all__ = ["ADVERSARIAL_DEFAULTS", "ADVERSARIAL_METHODS", "OBJECTIVE", "OBJECTIVES", "PAPERS", "SCHEDULES",
           "SCHEDULE_NOTES", "Recipe", "adversarial_settings", "card_recipe_notes", "recipe_from_card",
           "train_command"]

ADVERSARIAL_DEFAULTS: dict[str, Any] = {"attack": "fgsm", "eps": 0.25, "alpha": 0.5, "craft": "eval"}
OBJECTIVE = "alpha * J(x, y) + (1 - alpha) * J(clip01(x + eps * sign(grad_x J(x, y))), y)"

# Defaults of each adversarial-training method; a recipe names one with "attack".
ADVERSARIAL_METHODS: dict[str, dict[str, Any]] = {
    # Goodfellow, Shlens & Szegedy 2015, section 6: FGSM on the fly, alpha = 0.5, eps 0.25 on MNIST
    "fgsm": ADVERSARIAL_DEFAULTS,
    # Madry et al. 2018: the loss on PGD examples only (alpha 0); MNIST: eps 0.3, 40 steps of 0.01, random start
    "pgd": {"attack": "pgd", "eps": 0.3, "alpha": 0.0, "steps": 40, "step_size": 0.01, "random_init": True,
            "craft": "eval"},
    # Tramer et al. 2018: each batch's adversarial half from the current model or one of the static pre-trained
    # models, picked at random per batch; one-step (FGSM) examples, eps 0.3 on MNIST, alpha 0.5
    "ensemble": {"attack": "ensemble", "eps": 0.3, "alpha": 0.5, "static": [], "craft": "eval"},
    # training on a trained generator's samples (the JSMA paper's proposal, Papernot et al. 2016 section VI; AdvGAN,
    # Xiao et al. 2018): x_adv = Proj_eps(G(x)), eps the generator's card's unless given; alpha 0.5 as fgsm
    "generator": {"attack": "generator", "generator": "", "eps": None, "alpha": 0.5, "craft": "eval"},
}
OBJECTIVES = {
    "fgsm": OBJECTIVE,
    "pgd": "alpha * J(x, y) + (1 - alpha) * J(PGD(x), y), PGD: steps sign-gradient steps of step_size from a random "
           "start inside the eps ball (Madry et al.: alpha = 0)",
    "ensemble": "alpha * J(x, y) + (1 - alpha) * J(FGSM_s(x), y), s drawn per batch from {the current model} + "
                "the static models",
    "generator": "alpha * J(x, y) + (1 - alpha) * J(Proj_eps(G(x)), y), G a trained perturbation generator",
}
PAPERS = {
    "fgsm": "Goodfellow, Shlens & Szegedy 2015, Explaining and Harnessing Adversarial Examples, section 6",
    "pgd": "Madry, Makelov, Schmidt, Tsipras & Vladu 2018, Towards Deep Learning Models Resistant to Adversarial "
           "Attacks",
    "ensemble": "Tramer, Kurakin, Papernot, Goodfellow, Boneh & McDaniel 2018, Ensemble Adversarial Training",
    "generator": "Papernot et al. 2016, The Limitations of Deep Learning in Adversarial Settings, section VI "
                 "(training on generated adversarial samples); generator: Xiao et al. 2018 (AdvGAN) or Naseer et al. "
                 "2019",
}


def adversarial_settings(spec: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Check and complete an adversarial-training specification (see :class:`Recipe`).

    Args:
        spec: ``None`` (plain training) or a mapping with ``attack`` (``"fgsm"``, the default; ``"pgd"``;
            ``"ensemble"``) and that method's settings (:data:`ADVERSARIAL_METHODS`): ``eps`` (L-inf radius in
            pixel units of ``[0, 1]``, >= 0), ``alpha`` (weight of the clean term, in ``[0, 1]``), ``craft``
            (``"eval"``: craft with dropout off, the model the attacker faces at test time; ``"train"``: craft
            through the training-mode network); PGD's ``steps``, ``step_size`` and ``random_init``; the ensemble's
            ``static`` models (zoo names or paths, at least one); ``"generator"``'s ``generator`` (a
            ``.safetensors`` file of ``advkit train-generator`` or a shipped generator's name; ``"generator:PATH"``
            as ``attack`` says the same), whose card gives ``eps`` unless it is set.

    Returns:
        ``None`` or a new dict with every key of the method filled in.

    Raises:
        ValueError: an unknown method or key, or a value out of range.
    """
    if spec is None:
        return None
    method = spec.get("attack", "fgsm")
    if isinstance(method, str) and method.startswith("generator:"):
        spec = {**spec, "attack": "generator", "generator": method.split(":", 1)[1]}
        method = "generator"
    if method not in ADVERSARIAL_METHODS:
        raise ValueError(f"adversarial training supports {', '.join(ADVERSARIAL_METHODS)} (Goodfellow et al. 2015, "
                         f"Madry et al. 2018, Tramer et al. 2018), got {method!r}")
    defaults = ADVERSARIAL_METHODS[method]
    unknown = set(spec) - set(defaults) - ({"generator_sha256", "generator_dataset", "generator_input_shape"}
                                           if method == "generator" else set())
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)} for {method} adversarial training; known: "
                         f"{', '.join(defaults)}")
    out = {**defaults, **spec}
    if method == "generator":
        _complete_generator(out)
    # eps and step_size are L-inf distances in pixel units of [0, 1] (as `advkit attack` takes them): above 1 is a
    # mistake (5 for 5/255, say), not a stronger attack
    for key, lo, hi, what in (("eps", 0.0, 1.0, " (an L-inf radius in pixel units of [0, 1], e.g. 0.3 or 8/255)"),
                              ("alpha", 0.0, 1.0, " (the weight of the clean term)"),
                              ("step_size", 0.0, 1.0, " (in pixel units of [0, 1], e.g. 0.01)")):
        if key not in out:
            continue
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
            raise ValueError(f"adversarial {key} must be a finite number in [{lo:g}, {hi:g}]{what}, got {v!r}")
        out[key] = float(v)
    if "steps" in out and (isinstance(out["steps"], bool) or not isinstance(out["steps"], int) or out["steps"] < 1):
        raise ValueError(f"adversarial steps must be an integer >= 1, got {out['steps']!r}")
    if method == "ensemble":
        static = out["static"]
        if isinstance(static, str):
            static = [s for s in static.split(",") if s.strip()]
        if not static or not all(isinstance(s, str) and s.strip() for s in static):
            raise ValueError("ensemble adversarial training needs at least one static pre-trained model "
                             "(--adversarial-static lenet,mlp: zoo names or .safetensors paths)")
        out["static"] = [s.strip() for s in static]
    if out["craft"] not in ("eval", "train"):
        raise ValueError(f"adversarial craft must be 'eval' or 'train', got {out['craft']!r}")
    return out


def _complete_generator(out: dict[str, Any]) -> None:
    """Resolve the generator's file, check its card (a clear error for a missing or wrong file) and take its eps."""
    from advkit.models.checkpoint import CheckpointError
    from advkit.models.generator import generator_path, read_generator_card

    spec = out["generator"]
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("generator adversarial training needs a trained generator: --adversarial generator:PATH, "
                         "PATH a .safetensors file written by `advkit train-generator`")
    try:
        path = generator_path(spec.strip())
        card = read_generator_card(path)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        raise ValueError(f"generator adversarial training: cannot use generator {spec!r}: {e}") from e
    out["generator"] = str(path)
    out["generator_sha256"] = card["sha256"]
    out["generator_dataset"] = card.get("dataset")
    out["generator_input_shape"] = list(card["input_shape"])
    if out["eps"] is None:
        out["eps"] = float(card["eps"])


SCHEDULES = ("one-cycle", "constant")
"""Learning-rate schedules: one-cycle (peak ``lr``, warm-up over the first quarter, then annealed) or constant
``lr`` throughout (the JSMA and distillation papers' MNIST recipe)."""


SCHEDULE_NOTES = {"one-cycle": "one-cycle (pct_start 0.25)", "constant": "constant"}


@dataclass(frozen=True)
class Recipe:
    """Training hyper-parameters (recorded in the model card).

    Attributes:
        adversarial: ``None`` for plain training, or adversarial-training settings: Goodfellow et al. 2015
            (``{"attack": "fgsm", "eps": 0.25, "alpha": 0.5}``, the paper's MNIST values), Madry et al. 2018
            (``{"attack": "pgd", "eps": 0.3, "steps": 40, "step_size": 0.01}``) or Tramer et al. 2018
            (``{"attack": "ensemble", "static": ["lenet", "mlp"]}``); missing keys are filled in by
            :func:`adversarial_settings` when the recipe is built.
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
        for name, v in (("epochs", self.epochs), ("batch size", self.batch_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        for label, x in (("learning rate (--lr)", self.lr), ("momentum", self.momentum),
                         ("weight decay", self.weight_decay)):  # NaN would pass every comparison below
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
                raise ValueError(f"{label} must be a finite number, got {x!r}")
        if not self.lr > 0.0:
            raise ValueError(f"learning rate (--lr) must be > 0, got {self.lr!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not self.weight_decay >= 0.0:
            raise ValueError(f"weight decay must be >= 0, got {self.weight_decay!r}")
        object.__setattr__(self, "adversarial", adversarial_settings(self.adversarial))


def recipe_from_card(card: Mapping[str, Any]) -> Recipe:
    """The clean-training :class:`Recipe` a model card records (its ``recipe``), to retrain the model the same way.
    The card writes the schedule as a note (``"one-cycle (pct_start 0.25)"``) and the momentum actually used.

    Raises:
        ValueError: the card records no recipe.
    """
    rec = card.get("recipe")
    if not isinstance(rec, Mapping):
        raise ValueError(f"{card.get('name', 'the model')}'s card records no training recipe; it cannot be retrained "
                         f"the same way")
    fields = {k: rec[k] for k in ("epochs", "batch_size", "lr", "momentum", "weight_decay", "augment", "bf16",
                                  "optimizer", "nesterov") if k in rec}
    return Recipe(**fields, schedule=str(rec.get("schedule", "one-cycle")).split()[0])


def card_recipe_notes(recipe: Recipe) -> dict[str, Any]:
    """How a card records the recipe's schedule and the momentum actually used (Nesterov only with momentum)."""
    return {"schedule": SCHEDULE_NOTES[recipe.schedule], "nesterov": recipe.nesterov and recipe.momentum > 0}


def train_command(arch: str, dataset: str, recipe: Recipe, seed: int, out: str | Path | None = None,
                  train_split: str = "train", val_split: str | None = None) -> str:
    """The ``advkit train`` command line that reproduces a training run (recorded in the card).

    Adversarial training maps to ``--adversarial-eps EPS --adversarial-alpha ALPHA`` (and
    ``--adversarial-craft train`` when not the default), with ``--adversarial pgd|ensemble`` and those methods'
    settings for the other methods.
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
        if adv["attack"] == "generator":
            parts += ["--adversarial", f"generator:{adv['generator']}"]
        elif adv["attack"] != "fgsm":
            parts += ["--adversarial", adv["attack"]]
        parts += ["--adversarial-eps", f"{adv['eps']:g}", "--adversarial-alpha", f"{adv['alpha']:g}"]
        if adv["attack"] == "pgd":
            parts += ["--adversarial-steps", str(adv["steps"]), "--adversarial-step-size", f"{adv['step_size']:g}"]
            if not adv["random_init"]:
                parts.append("--no-adversarial-random-init")
        if adv["attack"] == "ensemble":
            parts += ["--adversarial-static", ",".join(adv["static"])]
        if adv["craft"] != ADVERSARIAL_DEFAULTS["craft"]:
            parts += ["--adversarial-craft", str(adv["craft"])]
    if train_split != "train":
        parts += ["--train-split", f"'{train_split}'"]
    if val_split is not None:
        parts += ["--val-split", f"'{val_split}'"]
    if out is not None:
        parts += ["--out", str(out)]
    return " ".join(parts)
