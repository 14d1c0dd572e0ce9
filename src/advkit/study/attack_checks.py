"""The checks of an experiment file's ``attacks`` list (part of :func:`advkit.study.validate.validate`).

Each entry is read (:func:`read_attacks`), then every attack it stands for (one per value of a swept setting) is
built once with the arguments its cells will use (:func:`build_attacks`, through
:func:`advkit.study.sweep.attack_arguments`), so that its settings are checked by the attack itself. The grammar's
errors are typed (:mod:`advkit.attacks.core.errors`): a problem names the field, the attack and what is valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from pathlib import Path
from typing import Any

from advkit.attacks import budget_norm, check_budget, create, parse, standalone_key
from advkit.attacks.core.errors import UnknownPartError, UnknownSettingError
from advkit.study.schema import AttackSpec, StudyConfig, eps_label, norm_label, parse_fraction
from advkit.study.sweep import attack_arguments, uses_eps, value_text, variants

__all__ = ["budget_problems", "build_attacks", "eps_list", "read_attacks", "swept_baselines"]

ATTACK_KEYS = {"name", "label", "settings", "eps"}
LABEL = re.compile(r"[A-Za-z0-9_.+\-]+")


def as_list(value: Any) -> list[Any]:
    """A value given as a list, a comma-separated string or one item, as a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()] if "," in value else [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def eps_list(value: Any, where: str, problems: list[str]) -> list[str]:
    """The budgets of an eps list as labels (``["16/255", "0.1"]``); each bad or repeated entry is a problem."""
    raw = as_list(value)
    if not raw:
        problems.append(f"{where}: give at least one budget (e.g. ['16/255'])")
    out: list[str] = []
    for i, e in enumerate(raw):
        try:
            parse_fraction(e, f"{where}[{i}]")
            out.append(eps_label(e))
        except ValueError as err:
            problems.append(str(err))
    for e in sorted({x for x in out if out.count(x) > 1}):
        problems.append(f"{where}: {e} is listed twice")
    return out


def _name(item: dict[str, Any], where: str, problems: list[str]) -> str | None:
    """The entry's attack name (lower case, but a file path keeps its case), or ``None`` after a problem."""
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{where}.name: missing attack name")
        return None
    name = name.strip()
    if not (name.partition(":")[2] and standalone_key(name)):
        name = name.lower()
    if standalone_key(name) is not None:
        return name
    try:
        parse(name)
    except UnknownPartError as e:
        parts = ", ".join(f"'{p}'" for p in e.unknown)
        problems.append(f"{where}.name: unknown attack part {parts} in {e.name!r}; known: {', '.join(e.known)}")
        return None
    except ValueError as e:  # a repeated part, two bases, parts that exclude each other
        problems.append(f"{where}.name: {e}")
        return None
    return name


def _settings(item: dict[str, Any], name: str, where: str, problems: list[str]) -> dict[str, Any]:
    """The entry's settings; a list is a sweep (tuples read as lists), refused when empty or repeating a value."""
    settings = item.get("settings") or {}
    if not isinstance(settings, dict):
        problems.append(f"{where}.settings: expected a mapping of attack settings, got {settings!r}")
        return {}
    if "eps" in settings:
        problems.append(f"{where}.settings.eps: the cells and tables are labelled by the eps list, so one eps "
                        f"here would run every cell at {settings['eps']!r} under the headings of the study's "
                        f"budgets; give the attack its own list instead: {{name: {name}, eps: [{settings['eps']}]}}")
    out = {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}
    for k, v in out.items():
        if not isinstance(v, list):
            continue
        texts = [value_text(x) for x in v]
        if not v:
            problems.append(f"{where}.settings.{k}: an empty list sweeps nothing; give one value or several")
        elif k == "norm" and len(set(texts)) > 1:
            problems.append(f"{where}.settings.norm: one norm per entry (a norm is another size of perturbation, "
                            f"with its own budgets); give each norm its own entry, {{name: {name}, settings: "
                            f"{{norm: {v[0]}}}}}, ...")
        for t in sorted({t for t in texts if texts.count(t) > 1}):
            problems.append(f"{where}.settings.{k}: {t} is listed twice")
    return out


def _entry(i: int, item: Any, problems: list[str]) -> AttackSpec | None:
    """One entry of ``attacks`` (a name, or a mapping with name / label / settings / eps)."""
    where = f"attacks[{i}]"
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict):
        problems.append(f"{where}: expected a name or a mapping with name/label/settings, got {item!r}")
        return None
    extra = set(item) - ATTACK_KEYS
    if extra:
        problems.append(f"{where}: unknown key(s) {sorted(extra)} (allowed: name, label, settings, eps)")
    name = _name(item, where, problems)
    if name is None:
        return None
    settings = _settings(item, name, where, problems)
    own = eps_list(item["eps"], f"{where}.eps", problems) if "eps" in item else []
    kind, _, file_part = name.partition(":")
    default = f"{kind}-" + re.sub(r"[^A-Za-z0-9_.+\-]", "_", Path(file_part).stem) \
        if file_part and standalone_key(name) else name
    label = item.get("label", default)
    if not isinstance(label, str) or not LABEL.fullmatch(label):
        problems.append(f"{where}.label: use letters, digits and _ . + - only, got {label!r}")
        label = name
    norm = settings.get("norm")
    spec = AttackSpec(name=name, label=label, settings=settings, eps=tuple(own),
                      norm=budget_norm(name, norm[0] if isinstance(norm, list) and norm else norm) or "linf")
    if own and not uses_eps(spec):
        problems.append(f"{where}.eps: {name!r} does not use eps (it bounds itself); drop it")
    return spec


def read_attacks(raw: Any, problems: list[str]) -> list[AttackSpec]:
    """The ``attacks`` list: each entry read and checked, labels unique."""
    items = as_list(raw)
    if not items:
        problems.append("attacks: give at least one attack (e.g. [ifgsm, mi, sgm])")
    out = [spec for i, item in enumerate(items) if (spec := _entry(i, item, problems)) is not None]
    labels = [a.label for a in out]
    for lab in sorted({x for x in labels if labels.count(x) > 1}):
        problems.append(f"attacks: label {lab!r} is used twice; give one of them a label: ...")
    return out


def swept_baselines(attacks: list[AttackSpec], labels: list[str]) -> list[str]:
    """A baseline must be one attack: each baseline label whose entry sweeps a setting is a problem."""
    problems = []
    for a in attacks:
        vs = variants(a)
        if a.label in labels and len(vs) > 1:
            swept = sorted({k for v in vs for k, _ in v.settings} & {k for k, x in a.settings.items()
                                                                      if isinstance(x, list) and len(x) > 1})
            problems.append(f"baseline: {a.label!r} sweeps {', '.join(swept)} ({len(vs)} attacks: "
                            f"{', '.join(v.label for v in vs)}); a baseline is one attack: give it an entry of its "
                            f"own with one value, e.g. {{name: {a.name}, label: {a.label}-base, settings: "
                            f"{{{swept[0]}: {value_text(dict(vs[0].settings)[swept[0]])}}}}}")
    return problems


def _did_you_mean(e: UnknownSettingError) -> str:
    close = difflib.get_close_matches(e.setting, e.valid, n=1)
    return f"; did you mean {close[0]!r}?" if close and not e.unused else ""


def _targeting(cfg: StudyConfig, atk: Any, name: str, where: str) -> str | None:
    """The problem of an attack with the study's ``targeted``: a pre-computed (artefact) attack cannot be aimed at a
    class, and a loss defined only for targeted attacks (Po+Trip) needs a targeted study."""
    if cfg.targeted is not None:
        if atk.kind == "artefact":
            return (f"{where}.name: {name} is a pre-computed (artefact) attack and cannot be targeted (targeted: "
                    f"{cfg.targeted}); remove it or the targeted key")
        return None
    from advkit.attacks.core import losses

    entry = losses.LOSSES.get(atk.loss) if isinstance(getattr(atk, "loss", None), str) else None
    if entry is not None and entry.targeted_only:
        return (f"{where}.settings.loss: {atk.loss!r} is defined only for targeted attacks; add targeted: random "
                "(or least_likely, or a class) to the experiment, or pick another loss")
    return None


def build_attacks(cfg: StudyConfig) -> tuple[StudyConfig, list[str]]:
    """Build every attack of ``cfg`` (each value of a sweep, each SGM decay written in its settings) at its first
    budget, with the arguments its cells will use. Returns the config with each attack's norm as the attack
    reports it, and the problems (each naming ``attacks[i].settings...``)."""
    problems: list[str] = []
    specs = list(cfg.attacks)
    for i, a in enumerate(cfg.attacks):
        where = f"attacks[{i}]"
        seen: set[str] = set()
        for v in variants(a):
            for g in v.gammas or (None,):
                try:
                    atk = create(a.name, **attack_arguments(cfg, v, (a.eps or cfg.eps)[0], g, where))
                except UnknownSettingError as e:
                    msg = f"{where}.settings.{e.setting}: {e}{_did_you_mean(e)}"
                except (ValueError, TypeError) as e:
                    text = str(e)
                    at = f" ({v.label[len(a.label) + 1:]})" if v.swept else ""
                    msg = text if text.startswith(where) else f"{where}.settings{at}: {text}"
                else:
                    specs[i] = dataclasses.replace(a, norm=str(getattr(atk, "norm", "linf")))
                    targeting = _targeting(cfg, atk, a.name, where)
                    if targeting is None:
                        continue
                    msg = targeting
                if msg not in seen:
                    seen.add(msg)
                    problems.append(msg)
    return dataclasses.replace(cfg, attacks=tuple(specs)), problems


def budget_problems(attacks: tuple[AttackSpec, ...], eps: tuple[str, ...], allow_large: bool) -> list[str]:
    """Each budget checked against its attack's own norm (an L-inf eps above 1 is refused unless
    ``allow_large_eps``), and the study's eps list refused where it would bound attacks of different norms."""
    problems: list[str] = []
    checked: set[tuple[str, str]] = set()
    for i, a in enumerate(attacks):
        where = f"attacks[{i}].eps" if a.eps else "eps"
        if not uses_eps(a) or (where, a.norm) in checked:
            continue
        checked.add((where, a.norm))
        for j, e in enumerate(a.eps or eps):
            try:
                check_budget(parse_fraction(e, where), a.norm, allow_large=allow_large,
                             flag="allow_large_eps: true in the experiment file")
            except ValueError as err:
                problems.append(f"{where}[{j}]: {err}")
    return problems + _mixed_norms(attacks, eps)


def _mixed_norms(attacks: tuple[AttackSpec, ...], eps: tuple[str, ...]) -> list[str]:
    """The study's eps list bounds one norm: the first attack's; the others are named, with the fix."""
    shared = [(i, a) for i, a in enumerate(attacks) if not a.eps and uses_eps(a)]
    norms = list(dict.fromkeys(a.norm for _, a in shared))
    if len(norms) < 2:
        return []
    first = ", ".join(a.label for _, a in shared if a.norm == norms[0])
    return [f"attacks[{i}]: {a.label} bounds eps in {norm_label(a.norm)} but shares the eps list {list(eps)} with "
            f"{norm_label(norms[0])} attacks ({first}); an {norm_label(a.norm)} radius is another size of "
            f"perturbation, so the two cannot share an eps heading. Give it its own budgets, {{name: {a.name}, eps: "
            f"[...]}}, or the same norm, settings: {{norm: {norms[0]}}}" for i, a in shared if a.norm != norms[0]]
