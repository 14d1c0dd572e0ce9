"""The attack registry and the name grammar for combinations.

Standalone attacks (``fgsm``, ``jsma``, ...) register their class under a name. Iterative gradient attacks are
compositions of parts, named with ``+``: ``ifgsm``, ``pgd``, ``mi``, ``di``, ``ti``, ``sgm`` and combinations such
as ``sgm+mi+di``; :func:`create` parses the name and builds one :class:`~advkit.attacks.engine.Iterative` attack.
Registering a name twice raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from advkit.attacks.base import Attack

_STANDALONE: dict[str, type[Attack]] = {}
_COMPOSABLE: dict[str, Callable[..., Any]] = {}


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator: register a standalone attack under ``cls.name``."""
    if cls.name in _STANDALONE or cls.name in _COMPOSABLE:
        raise ValueError(f"attack {cls.name!r} is already registered")
    _STANDALONE[cls.name] = cls
    return cls


def register_part(name: str, factory: Callable[..., Any]) -> None:
    """Register a composable part name of the grammar (used by the iterative engine)."""
    if name in _STANDALONE or name in _COMPOSABLE:
        raise ValueError(f"attack {name!r} is already registered")
    _COMPOSABLE[name] = factory


def standalone() -> dict[str, type[Attack]]:
    """The registered standalone attack classes by name."""
    return dict(_STANDALONE)


def parts() -> dict[str, Callable[..., Any]]:
    """The registered composable parts by name."""
    return dict(_COMPOSABLE)
