"""How reports write and order SGM decays: a number, or ``"auto"`` on an ensemble source (each member resolved its
own decay; the values are in the records' ``sgm_gammas``)."""

from __future__ import annotations

from typing import Any

__all__ = ["gamma_order", "gamma_text"]


def gamma_text(g: Any) -> str:
    """``0.2 -> " (γ=0.2)"``, ``"auto" -> " (γ=auto)"``, ``None`` (no SGM) -> ``""``."""
    return "" if g is None else f" (γ={g})" if isinstance(g, str) else f" (γ={g:g})"


def gamma_order(g: Any) -> float:
    """A sort key: no SGM first, then the decays in order, ``auto`` (a member's own decay) last."""
    return -1.0 if g is None else 2.0 if isinstance(g, str) else float(g)
