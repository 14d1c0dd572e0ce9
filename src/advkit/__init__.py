"""advkit: adversarial examples and how they transfer between neural networks.

Layers (each imports only from the ones before it; see docs/architecture.md): ``data`` -> ``models`` ->
``defences`` -> ``backprop`` -> ``attacks`` -> ``train`` -> ``evaluate`` -> ``study`` -> ``analysis`` -> ``report`` ->
``humans`` -> ``reproduce`` -> ``cli``.

``import advkit`` is cheap: each subpackage is imported the first time it is used (``advkit.models.load(...)``
works without ``import advkit.models``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__version__ = "0.1.0"

SUBPACKAGES = ("progress", "data", "models", "defences", "backprop", "attacks", "train", "evaluate", "study",
               "analysis", "report", "humans", "reproduce", "cli")

__all__ = ["SUBPACKAGES", "__version__", "analysis", "attacks", "backprop", "cli", "data", "defences", "evaluate",
           "humans", "models", "progress", "report", "reproduce", "study", "train"]


def __getattr__(name: str) -> ModuleType:
    """Import the subpackage ``advkit.NAME`` on first access (PEP 562)."""
    if name in SUBPACKAGES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *SUBPACKAGES})
