"""The attack registry: standalone attacks, composable parts and macro names share one namespace.

Standalone attacks (``jsma``, ...) register their class under a name with ``@register_attack``; parts of the
iterative engine register with ``@register_part`` (:mod:`advkit.attacks.gradient.parts` holds them).
Registering a name twice raises.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from advkit.attacks.core.base import Attack

_STANDALONE: dict[str, type[Attack]] = {}
_TAKEN: set[str] = set()


def claim_name(name: str) -> None:
    """Reserve ``name`` in the attack namespace; ``ValueError`` if it is taken."""
    if name in _TAKEN:
        raise ValueError(f"attack {name!r} is already registered")
    _TAKEN.add(name)


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator: register a standalone attack under ``cls.name``."""
    claim_name(cls.name)
    _STANDALONE[cls.name] = cls
    return cls


def standalone() -> dict[str, type[Attack]]:
    """The registered standalone attack classes by name."""
    return dict(_STANDALONE)

