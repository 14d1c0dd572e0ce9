"""Sweeps over attack settings, and the one place where a cell's attack arguments are built.

Any list in an attack's ``settings`` is swept: ``{name: mi, settings: {decay: [0.5, 1.0]}}`` is two attacks of the
tables, labelled ``mi decay=0.5`` and ``mi decay=1.0`` (:func:`variants`); an entry whose every setting has one
value keeps its own label, so experiment files written before sweeps existed give the same cells and records.

SGM's ``gamma`` is an ordinary setting (``settings: {gamma: [0.2, 0.5]}``, ``gamma: auto``) whose values, like
those of the study-wide ``gamma`` key that older files use, are recorded in the records' own ``gamma`` column
(tables write ``sgm (γ=0.2)``) rather than in the label; the study-wide key is the default of every SGM attack
that sets none (:func:`gamma_values`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from advkit.attacks import parse, standalone, standalone_key
from advkit.study.schema import AttackSpec, parse_alpha, parse_fraction

if TYPE_CHECKING:
    from advkit.study.schema import StudyConfig

__all__ = ["Variant", "attack_arguments", "gamma_values", "uses_eps", "value_text", "variants"]


def value_text(value: Any) -> str:
    """A setting's value as a label writes it: ``0.5``, ``1.0``, ``10``, ``eps/8``, ``true``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value).replace(" ", "")


@dataclass(frozen=True)
class Variant:
    """One attack of the tables: an entry of the experiment file with one value of each swept setting.

    Attributes:
        spec: the entry as written (its settings may hold lists).
        label: its label in the records: the entry's label, then ``name=value`` for each swept setting
            (``mi decay=0.5``); the entry's own label when nothing is swept.
        settings: ``(name, value)`` pairs of every setting, each with one value, in the order written; an SGM
            attack's ``gamma`` is not among them (see ``gammas``).
        gammas: an SGM attack's decays as written in its settings (``"auto"`` or numbers); empty: the study's
            ``gamma`` key; ``None``: not an SGM attack.
    """

    spec: AttackSpec
    label: str
    settings: tuple[tuple[str, Any], ...]
    gammas: tuple[float | str, ...] | None

    @property
    def swept(self) -> bool:
        """Whether this is one of several variants of its entry."""
        return self.label != self.spec.label


def _values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def variants(spec: AttackSpec) -> list[Variant]:
    """The attacks an entry stands for: one per combination of its swept settings' values (the first setting
    written varies slowest)."""
    uses_gamma = spec.uses_gamma
    gammas: tuple[float | str, ...] | None = None
    axes: list[tuple[str, list[Any]]] = []
    for k, v in spec.settings.items():
        if k == "gamma" and uses_gamma:
            gammas = tuple(_values(v))
        else:
            axes.append((k, _values(v)))
    if uses_gamma and gammas is None:
        gammas = ()
    out = []
    for combo in itertools.product(*(vals for _, vals in axes)):
        named = tuple((k, c) for (k, vals), c in zip(axes, combo, strict=True))
        label = spec.label + "".join(f" {k}={value_text(c)}" for (k, c), (_, vals) in zip(named, axes, strict=True)
                                     if len(vals) > 1)
        out.append(Variant(spec=spec, label=label, settings=named, gammas=gammas))
    return out


def gamma_values(gamma: Any, source: str, connections: str | None) -> tuple[float | str, ...]:
    """The SGM decays the study-wide ``gamma`` key gives ``source`` (whose card says ``connections``): a value or a
    list, or a mapping from a source, a connection kind or ``default`` to one; ``"auto"`` is left for the caller
    to resolve on the loaded model (:func:`advkit.attacks.resolve_gamma`)."""
    if isinstance(gamma, dict):
        gamma = gamma.get(source, gamma.get(connections or "", gamma.get("default", "auto")))
    return tuple(v if v == "auto" else float(v) for v in _values(gamma))


def uses_eps(spec: AttackSpec) -> bool:
    """Whether the attack is bounded by ``eps`` (JSMA bounds itself)."""
    solo = standalone_key(spec.name)
    return solo is None or "eps" not in standalone()[solo].unused


def attack_arguments(cfg: StudyConfig, variant: Variant, eps: str, gamma: float | str | None,
                     where: str = "attacks") -> dict[str, Any]:
    """The keyword arguments of :func:`advkit.attacks.create` for ``variant`` at budget ``eps`` (its label) and SGM
    decay ``gamma``: the study's steps and alpha, overridden by the attack's own settings.

    Used both to check an experiment (each attack built once) and to plan its cells, so that what is checked is
    what runs.

    Args:
        cfg: the study (its ``steps`` and ``alpha``).
        variant: the attack, one value per setting.
        eps: the budget's label (``"16/255"``).
        gamma: the SGM decay (a number, or ``"auto"`` while checking); ``None``: not an SGM attack.
        where: the field named by a bad step size.

    Raises:
        ValueError: a step size that is neither a number nor relative to eps.
    """
    spec = variant.spec
    solo = standalone_key(spec.name)
    kw: dict[str, Any] = {"eps": parse_fraction(eps, "eps")} if uses_eps(spec) else {}
    if solo is None:
        base = parse(spec.name)[0]
        kw["steps"] = 1 if base == "fgsm" else cfg.steps
        if cfg.alpha is not None and base != "fgsm":
            kw["alpha"] = parse_alpha(cfg.alpha, "alpha", eps)
        if gamma is not None:
            kw["gamma"] = gamma
    for k, v in variant.settings:
        kw[k] = parse_alpha(v, f"{where}.settings.alpha", eps) if k == "alpha" and isinstance(v, str) else v
    return kw

