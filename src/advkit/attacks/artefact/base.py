"""What the artefact attacks share: a file trained on a host model, named ``NAME:PATH``, whose card decides the
budget unless ``eps`` is given."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from advkit.attacks.core.base import ModelAttack

__all__ = ["ArtefactAttack"]


@dataclass(frozen=True)
class ArtefactAttack(ModelAttack):
    """An attack that applies an artefact (``generator:PATH``, ``uap:PATH``): the file is read and its card checked
    when the attack is created, so a wrong file fails before any image is attacked.

    Attributes:
        path: the artefact's ``.safetensors`` file, or the name of a shipped one.
        eps: the budget; ``-1`` (the default) takes the card's, the budget the artefact was trained for.
        card: the artefact's card, read from the file.
    """

    kind: ClassVar[str] = "artefact"
    takes_path: ClassVar[bool] = True
    missing: ClassVar[str] = "this attack needs a file: create('NAME:PATH')"  # the error without a path

    path: str = ""
    eps: float = field(default=-1.0)
    card: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError(self.missing)
        path, card = self._load(self.path)
        object.__setattr__(self, "path", str(path))
        object.__setattr__(self, "card", card)
        if self.eps == -1.0:
            object.__setattr__(self, "eps", float(card["eps"]))
        super().__post_init__()

    @abstractmethod
    def _load(self, path: str) -> tuple[Path, dict[str, Any]]:
        """The artefact's resolved file and its checked card (and whatever else the attack keeps from the file)."""
