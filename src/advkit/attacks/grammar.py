"""The name grammar: ``create("sgm+mi+di", eps=16/255, gamma=0.2)``.

A name is ``+``-joined tokens, each a registered part (:mod:`advkit.attacks.gradient.parts`) or a macro standing for
several (``vmi`` is ``mi+vt``). At most one base: ``fgsm``, ``ifgsm`` / ``bim`` (the default) or ``pgd``.
Standalone attacks such as ``jsma`` are looked up by their own name.

Each part brings its paper's defaults; keyword arguments override them and must belong to a part in the name
(``gamma`` without ``sgm`` is an error rather than a silent no-op). The common settings ``eps``, ``steps``,
``alpha``, ``norm`` and ``loss`` belong to every composition.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from advkit.attacks.core.base import Attack
from advkit.attacks.core.errors import UnknownPartError, UnknownSettingError
from advkit.attacks.core.registry import standalone
from advkit.attacks.gradient.engine import Iterative
from advkit.attacks.gradient.parts import HOOKS, Part, macros, parts

# Common keyword arguments of every iterative attack.
COMMON = ("eps", "steps", "alpha", "norm", "loss")


def _rank(token: str) -> tuple[int, int, str]:
    """Where a token sits in a canonical name: base first, then by hook (scope, update, input, gradient, stage)
    and each part's own order."""
    first = parts()[macros().get(token, (token,))[0]]
    return HOOKS.index(first.hook), first.order, token


def _split(name: str) -> list[str]:
    tokens = [t.strip().lower() for t in name.split("+")]
    if any(not t for t in tokens):
        raise ValueError(f"empty part in attack name {name!r}; write parts joined by '+', e.g. 'sgm+mi+di'")
    known_parts, known_macros = parts(), macros()
    unknown = [t for t in tokens if t not in known_parts and t not in known_macros]
    if unknown:
        known = sorted(set(known_parts) | set(known_macros) | set(standalone()))
        raise UnknownPartError(name, unknown, known)
    return tokens


def parse(name: str) -> list[str]:
    """Split and check a composed name; returns its parts' tokens in canonical order (base first; ``ifgsm``
    when the name has no base), macros expanded."""
    tokens = _split(name)
    expanded = [t for tok in tokens for t in macros().get(tok, (tok,))]
    if len(set(expanded)) != len(expanded):
        raise ValueError(f"attack name {name!r} repeats a part")
    classes = parts()
    bases = [t for t in expanded if classes[t].hook == "base"]
    if len(bases) > 1:
        raise ValueError(f"attack name {name!r} has more than one base ({', '.join(bases)}); pick one")
    for t in expanded:
        for other, why in classes[t].excludes.items():
            if other in expanded:
                raise ValueError(f"attack name {name!r} combines {t!r} with {other!r}: {why}")
    mods = sorted((t for t in expanded if t not in bases), key=_rank)
    return [bases[0] if bases else "ifgsm", *mods]


def label(name: str) -> str:
    """The canonical label of a composed name (``"di+sgm"`` -> ``"sgm+di"``); macros keep their name."""
    tokens = sorted(_split(name), key=_rank)
    return "+".join(t for t in tokens if not (t == "ifgsm" and len(tokens) > 1))


def settings_of(cls: type[Attack]) -> list[str]:
    """The settings a standalone attack class takes: its dataclass fields, less the ones it does not use."""
    return sorted(f.name for f in fields(cls) if f.init and f.name not in cls.unused and f.name != "path")


def _check_standalone(name: str, cls: type[Attack], kwargs: dict[str, Any]) -> None:
    allowed = settings_of(cls)
    for k in kwargs:
        if k in cls.unused:
            why = f" ({cls.unused_reason})" if cls.unused_reason else ""
            raise UnknownSettingError(f"{name!r} does not use {k!r}{why}; drop it. Its settings: {', '.join(allowed)}",
                                      name, k, allowed, unused=True)
        if k not in allowed:
            raise UnknownSettingError(f"{k!r} does not apply to {name!r} (its settings: {', '.join(allowed)})", name, k,
                                      allowed)


def create(name: str, **kwargs: Any) -> Attack:
    """Build an attack from its name and keyword arguments.

    Args:
        name: a standalone attack (``"jsma"``), a composition (``"pgd"``, ``"sgm+mi+di"``, ...) or a trained
            perturbation generator, ``"generator:PATH"``, or a universal perturbation, ``"uap:PATH"``.
        **kwargs: the attack's settings; eps and step sizes are in pixel units of ``[0, 1]`` (``16/255``).

    Returns:
        A frozen attack; call it as ``attack(model, x, y, target=None, generator=g)``.

    Raises:
        ValueError: unknown name or part, a setting that no part of the name uses, or an invalid value.
    """
    kind, sep, path = name.strip().partition(":")
    file_attack = standalone().get(kind.lower())
    if sep and file_attack is not None and file_attack.takes_path:
        _check_standalone(name, file_attack, kwargs)
        return file_attack(**{"path": path, **kwargs})
    key = name.strip().lower()
    solo = standalone()
    if key in solo:
        _check_standalone(key, solo[key], kwargs)
        return solo[key](**kwargs)
    tokens = parse(key)
    classes = [parts()[t] for t in tokens]
    common: dict[str, Any] = {}
    for cls in classes:
        common.update(cls.sets)
    aliases = {a: f for cls in classes for a, f in cls.aliases.items()}
    owned = set(COMMON) | {f for cls in classes for f in cls.setting_names()}
    per_part: list[dict[str, Any]] = [{} for _ in classes]
    given: dict[str, str] = {}
    for k, v in kwargs.items():
        field = aliases.get(k, k)
        if field not in owned:
            raise UnknownSettingError(f"{k!r} does not apply to {name!r} (its settings: {', '.join(sorted(owned))})",
                                      name, k, sorted(owned))
        if field in given:  # a name and its alias (decay= and mu=): never "the last wins"
            raise ValueError(f"{given[field]}= and {k}= both set {field} of {name!r}; give it once")
        given[field] = k
        if field in COMMON:
            common[field] = v
        for i, cls in enumerate(classes):
            if field in cls.setting_names():
                per_part[i][field] = v
    if tokens[0] == "fgsm" and common.get("steps", 1) != 1:
        raise ValueError("fgsm is a single step; use 'ifgsm' for several steps")
    built: list[Part] = [cls(**kw) for cls, kw in zip(classes, per_part, strict=True)]
    return Iterative(label=label(key), **common, parts=tuple(built))
