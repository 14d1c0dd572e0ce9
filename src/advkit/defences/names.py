"""Defended models by name: ``defended:DEFENCE[k=v,...]:MODEL``, accepted by :func:`advkit.models.load`.

``DEFENCE`` is one of :data:`advkit.defences.wrapper.DEFENCES`; the optional bracket holds its settings
(``true``/``false``, integers); ``MODEL`` is any name ``advkit.models.load`` takes (a zoo name, a checkpoint path,
``torchvision:NAME``, ``ensemble:A+B``), everything after the second colon. Examples: ``defended:jpeg:lenet``,
``defended:jpeg[quality=50,bpda=true]:lenet_pgd``, ``defended:random_resize_pad[seed=3]:resnet20``.
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn

PREFIX = "defended:"
_SPEC = re.compile(r"^(?P<defence>[a-z_]+)(?:\[(?P<settings>[^\]]*)\])?$")
SYNTAX = "defended:DEFENCE[k=v,...]:MODEL (e.g. defended:jpeg[quality=75,bpda=true]:lenet)"


def _value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(low)
    except ValueError:
        pass
    try:
        return float(low)
    except ValueError:
        raise ValueError(f"setting value {text!r} is not true/false or a number") from None


def parse_name(name: str) -> tuple[str, dict[str, Any], str]:
    """``"defended:jpeg[quality=50]:lenet"`` -> ``("jpeg", {"quality": 50}, "lenet")``.

    Raises:
        ValueError: not of the form :data:`SYNTAX`.
    """
    if not name.startswith(PREFIX):
        raise ValueError(f"{name!r} is not a defended model name; write {SYNTAX}")
    spec, colon, model = name[len(PREFIX):].partition(":")
    m = _SPEC.match(spec.strip())
    if not colon or not model.strip() or m is None:
        raise ValueError(f"{name!r} is not a defended model name; write {SYNTAX}")
    settings: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in (m["settings"] or "").split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"{name!r}: setting {item!r} is not k=v; write {SYNTAX}")
        try:
            settings[key.strip()] = _value(value)
        except ValueError as e:
            raise ValueError(f"{name!r}: {e}; write {SYNTAX}") from None
    return m["defence"], settings, model.strip()


def load_named(name: str, dataset: str) -> nn.Module:
    """The defended model a ``defended:`` name describes (the inner model loaded by ``advkit.models.load``)."""
    from advkit.defences.wrapper import DEFENCES, wrap
    from advkit.models import load

    defence, settings, inner = parse_name(name)
    if defence not in DEFENCES:
        raise ValueError(f"{name!r}: unknown defence {defence!r}; known: {', '.join(DEFENCES)}")
    return wrap(load(inner, dataset), defence, **settings)
