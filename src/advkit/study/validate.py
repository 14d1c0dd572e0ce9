"""Validation of the transfer study's experiment file (see :mod:`advkit.study.schema` for the format).

:func:`validate` turns a plain dict into a :class:`~advkit.study.schema.StudyConfig`, collecting every problem
into one :class:`~advkit.study.errors.ConfigError` whose lines name the field; each attack is built once so that
its settings are checked by the attack itself.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from advkit.attacks import budget_norm, check_budget, create, parse, standalone, standalone_key
from advkit.study.errors import ConfigError
from advkit.study.schema import (
    AttackSpec,
    SampleSpec,
    StudyConfig,
    eps_label,
    norm_label,
    parse_alpha,
    parse_fraction,
)

__all__ = ["validate"]

TOP_KEYS = {"title", "dataset", "data_dir", "data_options", "sources", "targets", "attacks", "eps", "steps", "alpha",
            "allow_large_eps", "gamma", "seeds", "sample", "baseline", "batch_size", "shard_size", "device",
            "save_png", "save_tensors", "reference", "notes"}
SAMPLE_KEYS = {"n", "pool", "split", "only_correct", "seed", "order", "range", "draw"}
ATTACK_KEYS = {"name", "label", "settings", "eps"}
CONNECTION_KEYS = ("residual", "dense", "none")


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()] if "," in value else [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _eps_list(value: Any, where: str, problems: list[str]) -> list[str]:
    """The budgets of an eps list as labels (``["16/255", "0.1"]``); each bad or repeated entry is a problem."""
    raw = _as_list(value)
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


def _uses_eps(a: AttackSpec) -> bool:
    solo = standalone_key(a.name)
    return solo is None or "eps" not in standalone()[solo].unused


def _int(value: Any, where: str, problems: list[str], minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        problems.append(f"{where}: expected an integer >= {minimum}, got {value!r}")
        return minimum
    return value


def _check_gamma(value: Any, where: str, problems: list[str]) -> None:
    vals = value if isinstance(value, (list, tuple)) else [value]
    if not vals:
        problems.append(f"{where}: empty list")
    for i, v in enumerate(vals):
        w = f"{where}[{i}]" if isinstance(value, (list, tuple)) else where
        if v == "auto":
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
            problems.append(f"{w}: SGM gamma must be a number in (0, 1] or 'auto', got {v!r}")


def _attacks(raw: Any, problems: list[str]) -> list[AttackSpec]:
    out: list[AttackSpec] = []
    items = _as_list(raw)
    if not items:
        problems.append("attacks: give at least one attack (e.g. [ifgsm, mi, sgm])")
    for i, item in enumerate(items):
        where = f"attacks[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict):
            problems.append(f"{where}: expected a name or a mapping with name/label/settings, got {item!r}")
            continue
        extra = set(item) - ATTACK_KEYS
        if extra:
            problems.append(f"{where}: unknown key(s) {sorted(extra)} (allowed: name, label, settings, eps)")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{where}.name: missing attack name")
            continue
        name = name.strip()
        kind, _, file_part = name.partition(":")
        if not (file_part and standalone_key(name)):
            name = name.lower()  # the path of a generator or a universal perturbation keeps its case
        if standalone_key(name) is None:
            try:
                parse(name)
            except ValueError as e:
                msg = str(e)
                m = re.search(r"unknown attack part\(s\) \[(.*?)\]", msg)
                if m:
                    parts = [p.strip().strip("'\"") for p in m.group(1).split(",")]
                    msg = "unknown attack part " + ", ".join(f"'{p}'" for p in parts) + msg[msg.find(" in "):]
                problems.append(f"{where}.name: {msg}")
                continue
        settings = item.get("settings") or {}
        if not isinstance(settings, dict):
            problems.append(f"{where}.settings: expected a mapping of attack settings, got {settings!r}")
            settings = {}
        if "eps" in settings:
            problems.append(f"{where}.settings.eps: the cells and tables are labelled by the eps list, so one eps "
                            f"here would run every cell at {settings['eps']!r} under the headings of the study's "
                            f"budgets; give the attack its own list instead: {{name: {name}, eps: "
                            f"[{settings['eps']}]}}")
        own = _eps_list(item["eps"], f"{where}.eps", problems) if "eps" in item else []
        default = name if not (file_part and standalone_key(name)) else \
            f"{kind}-" + re.sub(r"[^A-Za-z0-9_.+\-]", "_", Path(file_part).stem)
        label = item.get("label", default)
        if not isinstance(label, str) or not re.fullmatch(r"[A-Za-z0-9_.+\-]+", label):
            problems.append(f"{where}.label: use letters, digits and _ . + - only, got {label!r}")
            label = name
        spec = AttackSpec(name=name, label=label, settings=dict(settings), eps=tuple(own),
                          norm=budget_norm(name, settings.get("norm")) or "linf")
        if own and not _uses_eps(spec):
            problems.append(f"{where}.eps: {name!r} does not use eps (it bounds itself); drop it")
        out.append(spec)
    labels = [a.label for a in out]
    for lab in sorted({x for x in labels if labels.count(x) > 1}):
        problems.append(f"attacks: label {lab!r} is used twice; give one of them a label: ...")
    return out


def _sample(raw: Any, problems: list[str]) -> SampleSpec:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"sample: expected a mapping (n, pool, split, only_correct, seed, order), got {raw!r}")
        return SampleSpec()
    extra = set(raw) - SAMPLE_KEYS
    if extra:
        problems.append(f"sample: unknown key(s) {sorted(extra)} (allowed: {', '.join(sorted(SAMPLE_KEYS))})")
    n = _int(raw.get("n", 100), "sample.n", problems, 1)
    pool_all = raw.get("pool") == "all"
    pool = n if pool_all else _int(raw.get("pool", n), "sample.pool", problems, 1)
    if pool < n:
        problems.append(f"sample.pool: must be >= sample.n ({n}), got {pool}")
    start, stop = 0, None
    rng = raw.get("range")
    if rng is not None:
        ok = (isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                              for v in rng) and 0 <= rng[0] < rng[1])
        if not ok:
            problems.append(f"sample.range: expected [start, stop] with 0 <= start < stop, got {rng!r}")
        else:
            start, stop = int(rng[0]), int(rng[1])
    draw = raw.get("draw", "mixed")
    if draw not in ("mixed", "seed"):
        problems.append(f"sample.draw: expected 'mixed' or 'seed', got {draw!r}")
    only = raw.get("only_correct", True)
    if not isinstance(only, bool):
        problems.append(f"sample.only_correct: expected true or false, got {only!r}")
    order = raw.get("order", "random")
    if order not in ("random", "first"):
        problems.append(f"sample.order: expected 'random' or 'first', got {order!r}")
    split = raw.get("split", "test")
    if not isinstance(split, str):
        problems.append(f"sample.split: expected a split name, got {split!r}")
    return SampleSpec(n=n, pool=pool, split=str(split), only_correct=bool(only),
                      seed=_int(raw.get("seed", 0), "sample.seed", problems), order=str(order), start=start,
                      stop=stop, pool_all=pool_all, draw=str(draw))


def _models(raw: Any, where: str, problems: list[str], required: bool) -> list[str]:
    items = _as_list(raw)
    if required and not items:
        problems.append(f"{where}: give at least one model (zoo name, .safetensors path, torchvision:/timm:NAME)")
    out = []
    for i, m in enumerate(items):
        if not isinstance(m, str) or not m.strip():
            problems.append(f"{where}[{i}]: expected a model name or path, got {m!r}")
        else:
            out.append(m.strip())
    for m in sorted({x for x in out if out.count(x) > 1}):
        problems.append(f"{where}: {m!r} is listed twice")
    return out


def _budget_problems(attacks: list[AttackSpec], eps: list[str], allow_large: bool) -> list[str]:
    """Each budget checked against its attack's own norm (an L-inf eps above 1 is refused unless
    ``allow_large_eps``), and the study's eps list refused where it would bound attacks of different norms."""
    problems: list[str] = []
    checked: set[tuple[str, str]] = set()
    for i, a in enumerate(attacks):
        where = f"attacks[{i}].eps" if a.eps else "eps"
        if not _uses_eps(a) or (where, a.norm) in checked:
            continue
        checked.add((where, a.norm))
        for j, e in enumerate(a.eps or eps):
            try:
                value = parse_fraction(e, where)
            except ValueError:  # reported already
                continue
            try:
                check_budget(value, a.norm, allow_large=allow_large,
                             flag="allow_large_eps: true in the experiment file")
            except ValueError as err:
                problems.append(f"{where}[{j}]: {err}")
    shared = [(i, a) for i, a in enumerate(attacks) if not a.eps and _uses_eps(a)]
    norms = list(dict.fromkeys(a.norm for _, a in shared))
    if len(norms) > 1:  # the first attack's norm is the list's; the others are named, with the fix
        first = ", ".join(a.label for _, a in shared if a.norm == norms[0])
        for i, a in shared:
            if a.norm != norms[0]:
                problems.append(
                    f"attacks[{i}]: {a.label} bounds eps in {norm_label(a.norm)} but shares the eps list "
                    f"{list(eps)} with {norm_label(norms[0])} attacks ({first}); an {norm_label(a.norm)} radius is "
                    f"another size of perturbation, so the two cannot share an eps heading. Give it its own "
                    f"budgets, {{name: {a.name}, eps: [...]}}, or the same norm, settings: {{norm: {norms[0]}}}")
    return problems


def validate(raw: dict[str, Any]) -> StudyConfig:
    """Build a :class:`StudyConfig` from a plain dict, collecting every problem into one :class:`ConfigError`."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise ConfigError([f"(top level): expected a mapping of settings, got {type(raw).__name__}"])
    extra = set(raw) - TOP_KEYS
    if extra:
        problems.append(f"(top level): unknown key(s) {sorted(extra)}; allowed: {', '.join(sorted(TOP_KEYS))}")
    dataset = raw.get("dataset", "fashion-mnist")
    if not isinstance(dataset, str):
        problems.append(f"dataset: expected a dataset name, got {dataset!r}")
        dataset = "fashion-mnist"
    else:
        from advkit.data import names as dataset_names

        if dataset not in dataset_names():
            problems.append(f"dataset: unknown dataset {dataset!r}; known: {', '.join(dataset_names())}")
    sources = _models(raw.get("sources"), "sources", problems, True)
    targets = _models(raw.get("targets"), "targets", problems, True)
    attacks = _attacks(raw.get("attacks"), problems)
    eps = _eps_list(raw.get("eps", ["16/255"]), "eps", problems)
    allow_large = raw.get("allow_large_eps", False)
    if not isinstance(allow_large, bool):
        problems.append(f"allow_large_eps: expected true or false, got {allow_large!r}")
        allow_large = True
    steps = _int(raw.get("steps", 10), "steps", problems, 1)
    alpha = raw.get("alpha")
    if alpha is not None:
        try:
            parse_alpha(alpha, "alpha", 1)
            alpha = eps_label(alpha)
        except ValueError as err:
            problems.append(str(err))
    gamma = raw.get("gamma", "auto")
    if isinstance(gamma, dict):
        for k, v in gamma.items():
            if k not in (*sources, *CONNECTION_KEYS, "default"):
                problems.append(f"gamma.{k}: not a source nor one of residual, dense, none, default")
            _check_gamma(v, f"gamma.{k}", problems)
    else:
        _check_gamma(gamma, "gamma", problems)
        if isinstance(gamma, tuple):
            gamma = list(gamma)
    seeds_raw = _as_list(raw.get("seeds", [0]))
    seeds = [_int(s, f"seeds[{i}]", problems) for i, s in enumerate(seeds_raw)]
    if not seeds:
        problems.append("seeds: give at least one seed")
    if len(set(seeds)) != len(seeds):
        problems.append(f"seeds: repeated seed in {seeds}")
    sample = _sample(raw.get("sample"), problems)
    labels = [a.label for a in attacks]
    baseline = raw.get("baseline")
    also: list[str] = []
    if isinstance(baseline, list) and baseline and all(isinstance(b, str) for b in baseline):
        baseline, also = baseline[0], list(dict.fromkeys(baseline[1:]))
    if baseline is None:
        baseline = "ifgsm" if "ifgsm" in labels or not labels else labels[0]
    for b in (baseline, *also):
        if b not in labels:
            problems.append(f"baseline: {b!r} is not the label of an attack ({', '.join(labels) or 'none'}); give "
                            "one label or a list of labels")
    batch_size = _int(raw.get("batch_size", 100), "batch_size", problems, 1)
    shard = raw.get("shard_size")
    if shard is not None:
        shard = _int(shard, "shard_size", problems, 1)
        if shard % batch_size:
            problems.append(f"shard_size: must be a multiple of batch_size ({batch_size}) so that shards cut at "
                            f"batch boundaries, got {shard}")
    device = raw.get("device", "auto")
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", device):
        problems.append(f"device: expected auto, cpu, cuda or cuda:N, got {device!r}")
    save_png = _int(raw.get("save_png", 8), "save_png", problems)
    save_tensors = raw.get("save_tensors", True)
    if not isinstance(save_tensors, bool):
        problems.append(f"save_tensors: expected true or false, got {save_tensors!r}")
    data_options = raw.get("data_options") or {}
    if not isinstance(data_options, dict):
        problems.append(f"data_options: expected a mapping of loader options, got {data_options!r}")
        data_options = {}
    reference = raw.get("reference")
    if reference is not None and (not isinstance(reference, dict) or not isinstance(reference.get("rows", []), list)):
        problems.append("reference: expected a mapping with a 'rows' list (paper numbers to compare with)")
        reference = None
    notes = _as_list(raw.get("notes"))
    title = raw.get("title", "Transfer study")
    if not problems:  # build each attack once so that its settings are checked by the attack itself
        for i, a in enumerate(attacks):
            first = (a.eps or eps)[0]
            solo = standalone_key(a.name)
            kw: dict[str, Any] = {}
            if _uses_eps(a):
                kw["eps"] = parse_fraction(first, "eps")
            if solo is None:
                kw["steps"] = 1 if parse(a.name)[0] == "fgsm" else steps
                if alpha is not None and parse(a.name)[0] != "fgsm":
                    kw["alpha"] = parse_alpha(alpha, "alpha", first)
            try:
                for k, v in a.settings.items():
                    where = f"attacks[{i}].settings.{k}"
                    if k == "alpha" and isinstance(v, str):
                        v = parse_alpha(v, where, first)
                    kw[k] = v
                atk = create(a.name, **kw)
                attacks[i] = dataclasses.replace(a, norm=str(getattr(atk, "norm", "linf")))
            except ValueError as e:
                msg = str(e)
                problems.append(msg if msg.startswith(f"attacks[{i}]") else f"attacks[{i}].settings: {msg}")
            except TypeError as e:
                problems.append(f"attacks[{i}].settings: {e}")
    problems += _budget_problems(attacks, eps, allow_large)
    if problems:
        raise ConfigError(problems)
    return StudyConfig(
        dataset=dataset, sources=tuple(sources), targets=tuple(targets), attacks=tuple(attacks), eps=tuple(eps),
        steps=steps, alpha=alpha, gamma=gamma, seeds=tuple(seeds), sample=sample, baseline=str(baseline),
        also_compare=tuple(b for b in also if b != baseline),
        batch_size=batch_size, shard_size=shard, device=str(device), save_png=save_png, save_tensors=save_tensors,
        data_dir=None if raw.get("data_dir") is None else str(raw["data_dir"]), data_options=dict(data_options),
        reference=reference, title=str(title), notes=tuple(str(n) for n in notes),
    )
