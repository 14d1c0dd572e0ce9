"""The plan of a transfer study: the experiment resolved once into fully specified cells.

A :class:`Cell` is one (source, attack, eps, gamma, seed) with everything that decides its result written out:
the attack's name and every argument of :func:`advkit.attacks.create`, the budget's value and norm, the row of the
sample its seed attacks and the models evaluated on its examples. :func:`plan_cells` makes them, source-major;
the runner, the backends and the records only read them.

SGM's decays depend on the source's connection kind (``residual``, ``dense``, ``none``), read from its model card
or found by structure (:func:`advkit.backprop.find_connections`), never from its name; ``gamma: auto`` resolves
through :func:`advkit.attacks.resolve_gamma`, the one gamma resolver, and cells record a number, except on an
ensemble source (``ensemble:A+B``), where ``auto`` is kept so that SGM resolves each member's own decay.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from advkit.attacks import resolve_gamma
from advkit.backprop import find_connections
from advkit.models.ensemble import is_ensemble_name
from advkit.study.ensembles import holdout_sources, member_stems
from advkit.study.schema import AttackSpec, StudyConfig, parse_fraction
from advkit.study.sweep import Variant, attack_arguments, gamma_values, variants

__all__ = ["Cell", "cell_id", "connection_kind", "display_names", "plan_cells"]

CONNECTION_KINDS = ("residual", "dense", "none")


def cell_id(source: str, attack: str, eps: str, gamma: float | str | None, seed: int) -> str:
    """A readable, filesystem-safe, unique name for a cell: ``resnet20__sgm+mi__eps16-255__g0.2__s0__1a2b3c``
    (a swept attack's label, ``mi decay=0.5``, is written ``mi-decay-0.5``; the hash is of the label itself). A
    checkpoint is named by its file stem, an ensemble ``ensemble-`` and its members' stems (``ensemble-tres+tlin``)."""
    key = json.dumps([source, attack, eps, gamma, seed])
    short = hashlib.sha256(key.encode()).hexdigest()[:6]
    name = ("ensemble-" + "+".join(member_stems(source)) if is_ensemble_name(source)
            else Path(source).stem if source.endswith(".safetensors") else source)
    src = re.sub(r"[^A-Za-z0-9_.+-]+", "-", name)
    atk = re.sub(r"[^A-Za-z0-9_.+-]+", "-", attack)
    g = "" if gamma is None else f"__g{gamma}" if isinstance(gamma, str) else f"__g{gamma:g}"
    e = re.sub(r"[^0-9.]+", "-", eps)
    return f"{src.strip('-')[:40]}__{atk}__eps{e}{g}__s{seed}__{short}"


@dataclass(frozen=True)
class Cell:
    """One cell of the study, fully specified: what runs and what it is compared on.

    Attributes:
        id: its name in the run directory (:func:`cell_id`); a resumed run finds its shards by it.
        source: the model the examples are crafted on (its spec).
        attack: the experiment file's entry it comes from.
        label: the attack's label in the records (``mi``; ``mi decay=0.5`` for one value of a sweep).
        eps: the budget's label as written (``"16/255"``); ``eps_value`` its value, ``norm`` the norm it bounds.
        gamma: the SGM decay (a number), ``None`` for an attack without SGM; ``"auto"`` on an ensemble source,
            resolved by the attack for each member from its own card (the values used are in the shard's
            ``info["sgm"]["members"]`` and the records' ``sgm_gammas``).
        seed: the seed of the attack's randomness; ``pick`` the row of the sample's picks it attacks.
        models: the models evaluated on its examples: the source first, then the other targets.
        arguments: ``(name, value)`` pairs: every keyword argument of :func:`advkit.attacks.create`.
        targeted: the study's ``targeted`` (``None``: untargeted); the classes themselves are resolved once per
            (source, seed) with the sample (:func:`advkit.study.sample.study_targets`) and handed to each shard.
    """

    id: str
    source: str
    attack: AttackSpec
    label: str
    eps: str
    eps_value: float
    norm: str
    gamma: float | str | None
    seed: int
    pick: int
    models: tuple[str, ...]
    arguments: tuple[tuple[str, Any], ...]
    targeted: str | int | None = None

    @property
    def kwargs(self) -> dict[str, Any]:
        """The attack's arguments as a fresh dict (``create(cell.attack.name, **cell.kwargs)``)."""
        return dict(self.arguments)


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


class _KnownByItsCard(nn.Module):
    """A source known only by its connection kind: what :func:`resolve_gamma` reads from a model card."""

    def __init__(self, connections: str | None) -> None:
        super().__init__()
        self.card = {"connections": connections}


def _gammas(cfg: StudyConfig, variant: Variant, src: str, connections: str | None,
            auto: Callable[[str], float] | None) -> tuple[float | str | None, ...]:
    """The decays of ``variant``'s cells on ``src``, as numbers (``(None,)`` for an attack without SGM); ``auto``
    stays ``"auto"`` on an ensemble, whose members each resolve their own."""
    if variant.gammas is None:
        return (None,)

    def resolve(g: Any) -> float | str:
        if g != "auto":
            return float(g)
        if is_ensemble_name(src):
            return "auto"
        if auto is not None:
            return float(auto(src))
        return float(resolve_gamma("auto", _KnownByItsCard(connections)) or 0.2)

    written = variant.gammas or gamma_values(cfg.gamma, src, connections)  # its own, else the study's
    return tuple(dict.fromkeys(resolve(g) for g in written))


def plan_cells(cfg: StudyConfig, connections: dict[str, str],
               auto: Callable[[str], float] | None = None) -> list[Cell]:
    """Every cell of the study, source-major (so each source's model is used for a run of cells); within a source,
    attacks in the file's order (a sweep's values in order), then budgets, decays and seeds.

    Args:
        cfg: the study.
        connections: each source's connection kind (``residual``, ``dense``, ``none``).
        auto: the concrete decay of ``gamma: auto`` for a source, e.g. ``resolve_gamma("auto", model)`` on the
            loaded model (its card's ``sgm_gamma``); default: :func:`advkit.attacks.resolve_gamma` on the
            connection kind alone (the authors' 0.5 for dense sources, 0.2 for residual ones).
    """
    cells = []
    held = holdout_sources(cfg.targets) if cfg.holdout else {}
    for src in cfg.sources:
        # a hold-out ensemble is evaluated on the one target it leaves out (and on itself: white-box)
        models = (src, held[src]) if src in held else (src, *[t for t in cfg.targets if t != src])
        for a in cfg.attacks:
            for v in variants(a):
                gammas = _gammas(cfg, v, src, connections.get(src), auto)
                for eps in a.eps or cfg.eps:  # the attack's own budgets, else the study's
                    for g in gammas:
                        args = tuple(attack_arguments(cfg, v, eps, g).items())
                        for pick, seed in enumerate(cfg.seeds):
                            cells.append(Cell(id=cell_id(src, v.label, eps, g, seed), source=src, attack=a,
                                              label=v.label, eps=eps, eps_value=parse_fraction(eps, "eps"),
                                              norm=a.norm, gamma=g, seed=seed, pick=pick, models=models,
                                              arguments=args, targeted=cfg.targeted))
    return cells
