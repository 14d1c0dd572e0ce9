"""The attack registry: standalone attacks, composable parts and macro names share one namespace.

Standalone attacks (``jsma``, ...) register their class under a name with ``@register_attack``; parts of the
iterative engine register with ``@register_part`` (:mod:`advkit.attacks.gradient.parts` holds them).
Registering a name twice raises. An attack's kind (``"gradient"``, ``"saliency"``, ``"query"``, ``"artefact"``,
``"control"``) is recorded from its class when it registers: listings, checks and error messages ask
:func:`of_kind`, never a hand-written list of names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from advkit.attacks.core.base import Attack

KINDS = ("gradient", "saliency", "query", "artefact", "control")
"""The attack families, by threat model: white-box gradient and saliency attacks, black-box query attacks,
attacks that apply an artefact trained on a host model, and the random-noise control."""

A = TypeVar("A", bound="type[Attack]")

_STANDALONE: dict[str, type[Attack]] = {}
_TAKEN: set[str] = set()


def claim_name(name: str) -> None:
    """Reserve ``name`` in the attack namespace; ``ValueError`` if it is taken."""
    if name in _TAKEN:
        raise ValueError(f"attack {name!r} is already registered")
    _TAKEN.add(name)


def register_attack(cls: A) -> A:
    """Class decorator: register a standalone attack under ``cls.name``."""
    if cls.kind not in KINDS:
        raise ValueError(f"{cls.__name__}.kind must be one of {', '.join(KINDS)}, got {cls.kind!r}")
    claim_name(cls.name)
    _STANDALONE[cls.name] = cls
    return cls


def standalone() -> dict[str, type[Attack]]:
    """The registered standalone attack classes by name."""
    return dict(_STANDALONE)


def of_kind(kind: str) -> list[str]:
    """The names of the registered standalone attacks of one kind (``"query"``: the black-box attacks), sorted."""
    return sorted(n for n, cls in _STANDALONE.items() if cls.kind == kind)

