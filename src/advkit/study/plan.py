"""The plan of a transfer study: its cells (source, attack, eps, gamma, seed) and the attack settings of each.

SGM's decays depend on the source's connection kind (``residual``, ``dense``, ``none``), read from its model card
or found by structure (:func:`advkit.backprop.find_connections`), never from its name; ``gamma: auto`` resolves
through :func:`advkit.attacks.resolve_gamma`, the one gamma resolver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from advkit.attacks import parse, resolve_gamma, standalone, standalone_key
from advkit.backprop import find_connections
from advkit.study.runstate import cell_id
from advkit.study.schema import AttackSpec, StudyConfig, parse_alpha, parse_fraction

__all__ = ["Cell", "attack_kwargs", "connection_kind", "display_names", "plan_cells"]

CONNECTION_KINDS = ("residual", "dense", "none")


@dataclass(frozen=True)
class Cell:
    """One (source, attack, eps, gamma, seed) of the study and the attack settings it resolves to."""

    id: str
    source: str
    attack: AttackSpec
    eps: str
    gamma: float | None
    seed: int
    kwargs: dict[str, Any] = field(default_factory=dict)


def connection_kind(model: nn.Module) -> str:
    """``"residual"``, ``"dense"`` or ``"none"``: the card's ``connections`` field when it has one, else what
    :func:`advkit.backprop.find_connections` finds in the loaded model (``dense`` when every connection found is
    dense, ``none`` when there is none)."""
    card = getattr(model, "card", {}) or {}
    if card.get("connections") in CONNECTION_KINDS:
        return str(card["connections"])
    try:
        found = find_connections(model)
    except ValueError:  # no skip connection at all
        return "none"
    return "dense" if all(c.kind == "dense" for c in found) else "residual"


def display_names(models: dict[str, nn.Module]) -> dict[str, str]:
    """Short names for reports (the model's own name); a name shared by two specs falls back to the spec."""
    names = {spec: str(getattr(m, "name", "") or spec) for spec, m in models.items()}
    return {spec: n if list(names.values()).count(n) == 1 else spec for spec, n in names.items()}


def attack_kwargs(cfg: StudyConfig, attack: AttackSpec, eps: str, gamma: float | None) -> dict[str, Any]:
    """The keyword arguments of :func:`advkit.attacks.create` for one cell (settings override the study's)."""
    solo = standalone_key(attack.name)
    kw: dict[str, Any] = {} if solo is not None and "eps" in standalone()[solo].unused else {"eps": cfg.eps_value(eps)}
    if solo is None:
        base = parse(attack.name)[0]
        kw["steps"] = 1 if base == "fgsm" else cfg.steps
        if cfg.alpha is not None and base != "fgsm":
            kw["alpha"] = cfg.alpha_value(eps)
        if gamma is not None:
            kw["gamma"] = gamma
    for k, v in attack.settings.items():
        if k == "gamma":
            continue  # resolved by plan_cells (``auto`` becomes the source's number)
        if k == "alpha" and isinstance(v, str):
            kw[k] = parse_alpha(v, "alpha", eps)
        else:
            kw[k] = parse_fraction(v, k) if k == "eps" and isinstance(v, str) else v
    return kw


class _KnownByItsCard(nn.Module):
    """A source known only by its connection kind: what :func:`resolve_gamma` reads from a model card."""

    def __init__(self, connections: str | None) -> None:
        super().__init__()
        self.card = {"connections": connections}


def plan_cells(cfg: StudyConfig, connections: dict[str, str],
               auto: Callable[[str], float] | None = None) -> list[Cell]:
    """Every cell of the study, source-major (so each source's model is used for a run of cells).

    Args:
        cfg: the study.
        connections: each source's connection kind (``residual``, ``dense``, ``none``).
        auto: the concrete decay of ``gamma: auto`` for a source, e.g. ``resolve_gamma("auto", model)`` on the
            loaded model (its card's ``sgm_gamma``); default: :func:`advkit.attacks.resolve_gamma` on the
            connection kind alone (the authors' 0.5 for dense sources, 0.2 for residual ones). Cells always record
            a number.
    """
    def resolve(src: str, g: Any) -> float:
        if g != "auto":
            return float(g)
        if auto is not None:
            return float(auto(src))
        return float(resolve_gamma("auto", _KnownByItsCard(connections.get(src))) or 0.2)

    cells = []
    for src in cfg.sources:
        for a in cfg.attacks:
            if not a.uses_gamma:
                gammas: tuple[float | None, ...] = (None,)
            elif "gamma" in a.settings:
                gammas = (resolve(src, a.settings["gamma"]),)
            else:
                gammas = tuple(dict.fromkeys(resolve(src, g) for g in cfg.gammas_for(src, connections.get(src))))
            for eps in cfg.eps_for(a):  # the attack's own budgets, else the study's
                for g in gammas:
                    for seed in cfg.seeds:
                        cells.append(Cell(cell_id(src, a.label, eps, g, seed), src, a, eps, g, seed,
                                          attack_kwargs(cfg, a, eps, g)))
    return cells
