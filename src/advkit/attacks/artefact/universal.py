"""The universal-perturbation attack: the same perturbation ``v`` added to every image (``uap:PATH``).

    attack = advkit.attacks.create("uap:runs/uap/lenet.safetensors")    # eps and norm from the card
    attack = advkit.attacks.create("uap:fashion-mnist-lenet")            # a shipped one

``v`` comes from :func:`advkit.train.deepfool.universal_perturbation` (``advkit train-uap``). At attack time it
costs nothing: ``x + v``, projected onto the budget and ``[0, 1]``; the model is asked only for the success check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from advkit.attacks.artefact.base import ArtefactAttack
from advkit.attacks.core.base import Counter
from advkit.attacks.core.registry import register_attack
from advkit.models.universal import load_universal, universal_path

__all__ = ["UniversalAttack"]


@register_attack
@dataclass(frozen=True)
class UniversalAttack(ArtefactAttack):
    """A universal adversarial perturbation (Moosavi-Dezfooli et al. 2017) added to every image; ``uap:PATH``."""

    name: ClassVar[str] = "uap"
    missing: ClassVar[str] = ("the uap attack needs a perturbation: create('uap:PATH') with a .safetensors file "
                              "written by `advkit train-uap`")

    norm: str = field(default="", init=False)  # the card's
    perturbation: torch.Tensor | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eps == 0:
            raise ValueError("eps must be > 0")

    def _load(self, path: str) -> tuple[Path, dict[str, Any]]:
        resolved = universal_path(path)
        v, card = load_universal(resolved)
        object.__setattr__(self, "perturbation", v)
        object.__setattr__(self, "norm", str(card["norm"]))
        return resolved, card

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "eps": self.eps, "norm": self.norm,
                "source": self.card.get("source"), "sha256": self.card["sha256"]}

    def _run(self, model: Counter, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
             generator: torch.Generator | None) -> torch.Tensor:
        if target is not None:
            raise ValueError("a universal perturbation is untargeted")
        assert self.perturbation is not None
        if tuple(x.shape[1:]) != tuple(self.perturbation.shape):
            c, h, w = self.perturbation.shape
            raise ValueError(f"this perturbation was computed for {c}x{h}x{w} images, got "
                             f"{'x'.join(map(str, x.shape[1:]))}; compute one for these images (advkit train-uap)")
        model.info["uap"] = {"path": self.path, "source": self.card.get("source")}
        return x + self.perturbation.to(x)
