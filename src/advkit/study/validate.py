"""Validation of the transfer study's experiment file (see :mod:`advkit.study.schema` for the format).

:func:`validate` turns a plain dict into a :class:`~advkit.study.schema.StudyConfig`, collecting every problem
into one :class:`~advkit.study.errors.ConfigError` whose lines name the field. Each top-level field has its own
small check here; the ``attacks`` list has its checks in :mod:`advkit.study.attack_checks`, where each attack is
built once so that its settings are checked by the attack itself.
"""

from __future__ import annotations

import re
from typing import Any

from advkit.study.attack_checks import (
    as_list,
    budget_problems,
    build_attacks,
    eps_list,
    read_attacks,
    swept_baselines,
)
from advkit.study.ensembles import holdout_sources, model_entry
from advkit.study.errors import ConfigError
from advkit.study.schema import AttackSpec, SampleSpec, StudyConfig, eps_label, parse_alpha
from advkit.study.sweep import variants

__all__ = ["validate"]

TOP_KEYS = {"title", "dataset", "data_dir", "data_options", "sources", "targets", "attacks", "eps", "steps", "alpha",
            "allow_large_eps", "gamma", "seeds", "sample", "baseline", "batch_size", "shard_size", "device",
            "save_png", "save_tensors", "reference", "notes", "targeted", "holdout"}
SAMPLE_KEYS = {"n", "pool", "split", "only_correct", "seed", "order", "range", "draw"}
CONNECTION_KEYS = ("residual", "dense", "none")
TARGET_MODES = ("random", "least_likely")


def _int(value: Any, where: str, problems: list[str], minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        problems.append(f"{where}: expected an integer >= {minimum}, got {value!r}")
        return minimum
    return value


def _bool(raw: dict[str, Any], key: str, default: bool, problems: list[str], if_bad: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        problems.append(f"{key}: expected true or false, got {value!r}")
        return if_bad
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


def _range(rng: Any, problems: list[str]) -> tuple[int, int | None]:
    if rng is None:
        return 0, None
    ok = (isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in rng)
          and 0 <= rng[0] < rng[1])
    if not ok:
        problems.append(f"sample.range: expected [start, stop] with 0 <= start < stop, got {rng!r}")
        return 0, None
    return int(rng[0]), int(rng[1])


def _choice(raw: dict[str, Any], key: str, default: str, allowed: tuple[str, ...], where: str,
            problems: list[str]) -> str:
    value = raw.get(key, default)
    if value not in allowed:
        problems.append(f"{where}: expected {' or '.join(repr(a) for a in allowed)}, got {value!r}")
    return str(value)


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
    start, stop = _range(raw.get("range"), problems)
    draw = _choice(raw, "draw", "mixed", ("mixed", "seed"), "sample.draw", problems)
    only = raw.get("only_correct", True)
    if not isinstance(only, bool):
        problems.append(f"sample.only_correct: expected true or false, got {only!r}")
    order = _choice(raw, "order", "random", ("random", "first"), "sample.order", problems)
    split = raw.get("split", "test")
    if not isinstance(split, str):
        problems.append(f"sample.split: expected a split name, got {split!r}")
    return SampleSpec(n=n, pool=pool, split=str(split), only_correct=bool(only),
                      seed=_int(raw.get("seed", 0), "sample.seed", problems), order=order, start=start,
                      stop=stop, pool_all=pool_all, draw=draw)


def _models(raw: Any, where: str, problems: list[str], required: bool) -> list[str]:
    items = as_list(raw)
    if required and not items:
        problems.append(f"{where}: give at least one model (zoo name, .safetensors path, torchvision:/timm:NAME)")
    out = []
    for i, m in enumerate(items):
        spec = model_entry(m, f"{where}[{i}]", problems)  # a name, or an ensemble's mapping as its name
        if spec is not None:
            out.append(spec)
    for m in sorted({x for x in out if out.count(x) > 1}):
        problems.append(f"{where}: {m!r} is listed twice")
    return out


def _holdout(sources: list[str], targets: list[str], problems: list[str]) -> list[str]:
    """``holdout: true``: the sources are the targets' hold-out ensembles; the file must give none."""
    if sources:
        problems.append(f"sources: holdout: true derives the sources (each target's hold-out ensemble), so give "
                        f"no sources (got {sources}); remove sources, or set holdout: false")
        return []
    try:
        return list(holdout_sources(targets))
    except ValueError as err:
        problems.append(str(err))
        return []


def _dataset(raw: dict[str, Any], problems: list[str]) -> str:
    dataset = raw.get("dataset", "fashion-mnist")
    if not isinstance(dataset, str):
        problems.append(f"dataset: expected a dataset name, got {dataset!r}")
        return "fashion-mnist"
    from advkit.data import names as dataset_names

    if dataset not in dataset_names():
        problems.append(f"dataset: unknown dataset {dataset!r}; known: {', '.join(dataset_names())}")
    return dataset


def _alpha(raw: dict[str, Any], problems: list[str]) -> str | None:
    alpha = raw.get("alpha")
    if alpha is None:
        return None
    try:
        parse_alpha(alpha, "alpha", 1)
    except ValueError as err:
        problems.append(str(err))
        return None
    return eps_label(alpha)


def _gamma(raw: dict[str, Any], sources: list[str], problems: list[str]) -> Any:
    """The study-wide SGM decay (the default of every SGM attack that sets none)."""
    gamma = raw.get("gamma", "auto")
    if not isinstance(gamma, dict):
        _check_gamma(gamma, "gamma", problems)
        return list(gamma) if isinstance(gamma, tuple) else gamma
    for k, v in gamma.items():
        if k not in (*sources, *CONNECTION_KEYS, "default"):
            problems.append(f"gamma.{k}: not a source nor one of residual, dense, none, default")
        _check_gamma(v, f"gamma.{k}", problems)
    return gamma


def _seeds(raw: dict[str, Any], problems: list[str]) -> list[int]:
    seeds = [_int(s, f"seeds[{i}]", problems) for i, s in enumerate(as_list(raw.get("seeds", [0])))]
    if not seeds:
        problems.append("seeds: give at least one seed")
    if len(set(seeds)) != len(seeds):
        problems.append(f"seeds: repeated seed in {seeds}")
    return seeds


def _baselines(raw: dict[str, Any], attacks: list[AttackSpec], problems: list[str]) -> tuple[str, tuple[str, ...]]:
    """The baseline's label and the other labels every attack is also compared with."""
    labels = [a.label for a in attacks]
    baseline = raw.get("baseline")
    also: list[str] = []
    if isinstance(baseline, list) and baseline and all(isinstance(b, str) for b in baseline):
        baseline, also = baseline[0], list(dict.fromkeys(baseline[1:]))
    if baseline is None:  # I-FGSM, else the first attack that sweeps nothing
        single = [a.label for a in attacks if len(variants(a)) == 1]
        baseline = "ifgsm" if "ifgsm" in labels or not labels else (single or labels)[0]
    for b in (baseline, *also):
        if b not in labels:
            problems.append(f"baseline: {b!r} is not the label of an attack ({', '.join(labels) or 'none'}); give "
                            "one label or a list of labels")
    problems += swept_baselines(attacks, [baseline, *also])
    return str(baseline), tuple(b for b in also if b != baseline)


def _shard(raw: dict[str, Any], batch_size: int, problems: list[str]) -> int | None:
    shard = raw.get("shard_size")
    if shard is None:
        return None
    shard = _int(shard, "shard_size", problems, 1)
    if shard % batch_size:
        problems.append(f"shard_size: must be a multiple of batch_size ({batch_size}) so that shards cut at "
                        f"batch boundaries, got {shard}")
    return shard


def _device(raw: dict[str, Any], problems: list[str]) -> str:
    device = raw.get("device", "auto")
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", device):
        problems.append(f"device: expected auto, cpu, cuda or cuda:N, got {device!r}")
    return str(device)


def _targeted(raw: dict[str, Any], dataset: str, problems: list[str]) -> str | int | None:
    """``targeted``: absent (untargeted), ``random``, ``least_likely``, or a class index or name of ``dataset``
    (a name of a dataset with fixed classes is stored as its index)."""
    value = raw.get("targeted")
    if value is None or value in TARGET_MODES:
        return value
    from advkit.data import get_spec, names

    classes = get_spec(dataset).classes if dataset in names() else ()
    known = f"{len(classes)} classes: 0-{len(classes) - 1} or {', '.join(classes)}" if classes else "its classes"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        if value >= 0 and (not classes or value < len(classes)):
            return value
        problems.append(f"targeted: class {value} is not a class of {dataset} ({known})")
    elif isinstance(value, str) and value.strip():
        if not classes:  # the data decides its classes (imagefolder): checked when the sample is drawn
            return value.strip()
        if value.strip() in classes:
            return classes.index(value.strip())
        problems.append(f"targeted: {value!r} is neither random, least_likely nor a class of {dataset} ({known})")
    else:
        problems.append(f"targeted: expected random, least_likely, a class index or a class name of {dataset}, "
                        f"got {value!r}")
    return None


def _extras(raw: dict[str, Any], problems: list[str]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``data_options`` (loader options) and ``reference`` (paper numbers to compare with)."""
    data_options = raw.get("data_options") or {}
    if not isinstance(data_options, dict):
        problems.append(f"data_options: expected a mapping of loader options, got {data_options!r}")
        data_options = {}
    reference = raw.get("reference")
    if reference is not None and (not isinstance(reference, dict) or not isinstance(reference.get("rows", []), list)):
        problems.append("reference: expected a mapping with a 'rows' list (paper numbers to compare with)")
        reference = None
    return dict(data_options), reference


def validate(raw: dict[str, Any]) -> StudyConfig:
    """Build a :class:`StudyConfig` from a plain dict, collecting every problem into one :class:`ConfigError`.

    Each field is read by its own check, in the file's usual order; then, when nothing else is wrong, every attack
    is built once with the arguments its cells will use (:func:`advkit.study.attack_checks.build_attacks`).
    """
    if not isinstance(raw, dict):
        raise ConfigError([f"(top level): expected a mapping of settings, got {type(raw).__name__}"])
    problems: list[str] = []
    extra = set(raw) - TOP_KEYS
    if extra:
        problems.append(f"(top level): unknown key(s) {sorted(extra)}; allowed: {', '.join(sorted(TOP_KEYS))}")
    dataset = _dataset(raw, problems)
    holdout = _bool(raw, "holdout", False, problems, if_bad=False)
    sources = _models(raw.get("sources"), "sources", problems, not holdout)
    targets = _models(raw.get("targets"), "targets", problems, True)
    if holdout:
        sources = _holdout(sources, targets, problems)
    attacks = read_attacks(raw.get("attacks"), problems)
    eps = eps_list(raw.get("eps", ["16/255"]), "eps", problems)
    allow_large = _bool(raw, "allow_large_eps", False, problems, if_bad=True)
    steps = _int(raw.get("steps", 10), "steps", problems, 1)
    alpha, gamma, seeds = _alpha(raw, problems), _gamma(raw, sources, problems), _seeds(raw, problems)
    sample = _sample(raw.get("sample"), problems)
    baseline, also = _baselines(raw, attacks, problems)
    batch_size = _int(raw.get("batch_size", 100), "batch_size", problems, 1)
    shard, device = _shard(raw, batch_size, problems), _device(raw, problems)
    save_png = _int(raw.get("save_png", 8), "save_png", problems)
    save_tensors = _bool(raw, "save_tensors", True, problems, if_bad=True)
    data_options, reference = _extras(raw, problems)
    targeted = _targeted(raw, dataset, problems)
    cfg = StudyConfig(
        dataset=dataset, sources=tuple(sources), targets=tuple(targets), attacks=tuple(attacks), eps=tuple(eps),
        steps=steps, alpha=alpha, gamma=gamma, seeds=tuple(seeds), sample=sample, baseline=baseline,
        also_compare=also, batch_size=batch_size, shard_size=shard, device=device, save_png=save_png,
        save_tensors=save_tensors, data_dir=None if raw.get("data_dir") is None else str(raw["data_dir"]),
        data_options=data_options, reference=reference, title=str(raw.get("title", "Transfer study")),
        notes=tuple(str(n) for n in as_list(raw.get("notes"))), targeted=targeted, holdout=holdout)
    if not problems:  # each attack built once, with the arguments its cells will use
        cfg, built = build_attacks(cfg)
        problems += built
    problems += budget_problems(cfg.attacks, cfg.eps, allow_large)
    if problems:
        raise ConfigError(problems)
    return cfg
