"""The generator attack: a trained perturbation generator (Naseer et al. 2019) applied in one forward pass.

    attack = advkit.attacks.create("generator:runs/gen/lenet.safetensors")          # eps from the card
    attack = advkit.attacks.create("generator:runs/gen/lenet.safetensors", eps=0.05)  # a smaller budget
    attack = advkit.attacks.create("generator:fashion-mnist-resnet20")                 # a shipped one

The generator was trained against its source model(s) (``advkit train-generator``); at attack time it never
sees the model under attack: one forward pass through the generator per image, the output projected onto the
L-inf ball of ``eps`` around the input. The model is queried once, by the contract's success check only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from advkit.attacks.artefact.base import ArtefactAttack
from advkit.attacks.core.base import Counter
from advkit.attacks.core.registry import register_attack
from advkit.models.generator import (
    PerturbationGenerator,
    generator_path,
    load_generator,
    project_linf,
    read_generator_card,
)

__all__ = ["GeneratorAttack"]

_CACHE: dict[tuple[str, str], PerturbationGenerator] = {}


def _loaded(path: str, sha: str) -> PerturbationGenerator:
    key = (str(Path(path).resolve()), sha)
    if key not in _CACHE:
        _CACHE[key] = load_generator(path)[0]
    return _CACHE[key]


@register_attack
@dataclass(frozen=True)
class GeneratorAttack(ArtefactAttack):
    """A perturbation generator (Naseer et al. 2019), one forward pass per image; ``generator:PATH``."""

    name: ClassVar[str] = "generator"
    missing: ClassVar[str] = ("the generator attack needs the generator's weights: create('generator:PATH'), where "
                              "PATH is a .safetensors file written by `advkit train-generator`, or "
                              "create('generator:NAME') for a shipped one")

    norm: str = field(default="linf", init=False)  # generators are trained for an L-inf budget

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eps == 0 or self.eps > 1:
            raise ValueError(f"eps must be in (0, 1] (an L-inf budget in pixel units), got {self.eps!r}")

    def _load(self, path: str) -> tuple[Path, dict[str, Any]]:
        resolved = generator_path(path)
        return resolved, read_generator_card(resolved)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "eps": self.eps, "trained_eps": self.card["eps"],
                "sources": self.card.get("sources"), "loss": self.card.get("loss"), "sha256": self.card["sha256"]}

    def _run(self, model: Counter, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
             generator: torch.Generator | None) -> torch.Tensor:
        if target is not None:
            raise ValueError("this generator was trained untargeted; targeted generators are not supported")
        c, h, w = self.card["input_shape"]
        if tuple(x.shape[1:]) != (c, h, w):
            raise ValueError(f"this generator was trained on {c}x{h}x{w} images, got "
                             f"{'x'.join(map(str, x.shape[1:]))}; train one for these images (advkit "
                             f"train-generator) or resize them to {h}x{w}")
        gen = _loaded(self.path, self.card["sha256"]).to(x.device)
        with torch.no_grad():
            raw = gen(x)
        model.info["generator"] = {"path": self.path, "sources": self.card.get("sources"),
                                   "trained_eps": self.card["eps"]}
        return project_linf(raw, x, self.eps)
