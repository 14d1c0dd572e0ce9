"""Typed errors of the attack name grammar (:func:`advkit.attacks.create`).

Each is a ``ValueError`` whose message reads as before, and which also carries what was wrong and what would have
been valid, so that a caller (the study's experiment-file checks) names the field without parsing the text::

    try:
        create("mi", decya=0.5)
    except UnknownSettingError as e:
        e.attack, e.setting, e.valid     # "mi", "decya", ("alpha", "decay", "eps", ...)
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["AttackNameError", "UnknownPartError", "UnknownSettingError"]


class AttackNameError(ValueError):
    """An attack name that the grammar cannot read.

    Attributes:
        name: the name as given.
    """

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


class UnknownPartError(AttackNameError):
    """Tokens of a ``+``-joined name that are neither a registered part, a macro nor a standalone attack.

    Attributes:
        name: the name as given.
        unknown: the offending tokens, in the order written.
        known: every valid token (parts, macros and standalone attacks), sorted.
    """

    def __init__(self, name: str, unknown: Iterable[str], known: Iterable[str]) -> None:
        self.unknown = tuple(unknown)
        self.known = tuple(known)
        super().__init__(f"unknown attack part(s) {list(self.unknown)} in {name!r}; known: {', '.join(self.known)}",
                         name)


class UnknownSettingError(ValueError):
    """A keyword argument that the attack does not take (no part of the name owns it), or that it takes but does
    not use (a standalone attack's ``unused`` field, such as JSMA's ``eps``).

    Attributes:
        attack: the attack's name as given to :func:`~advkit.attacks.create`.
        setting: the offending keyword.
        valid: the settings the attack takes, sorted.
        unused: ``True`` when the attack has the field but does not use it.
    """

    def __init__(self, message: str, attack: str, setting: str, valid: Iterable[str], unused: bool = False) -> None:
        super().__init__(message)
        self.attack = attack
        self.setting = setting
        self.valid = tuple(valid)
        self.unused = unused
