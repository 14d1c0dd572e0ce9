"""The transfer study's experiment file: YAML (or a dict) plus overrides, validated up front.

A minimal file::

    dataset: fashion-mnist
    sources: [resnet20]
    targets: [vgg11_bn, densenet_bc40, lenet]
    attacks: [ifgsm, mi, {name: ti, settings: {ti_kernel: 5}}, {name: sgm, label: sgm-0.5, settings: {gamma: 0.5}}]
    eps: ["16/255", 0.1]
    steps: 10
    seeds: [0, 1, 2]
    sample: {n: 200, only_correct: true, seed: 0}

Every number of pixels (``eps``, ``alpha``) may be written as a fraction such as ``16/255``; it is parsed exactly
with :class:`fractions.Fraction`, never ``eval``. The step size may also be relative to each budget: ``alpha:
eps/8`` (the SGM paper's 2/255 at 16/255) or ``alpha: eps*0.25``. ``gamma`` (the SGM decay, used by attacks
whose name contains ``sgm``) is a number, a list of numbers (a sweep), or a mapping from a source name or its
connection kind (``residual``, ``dense``) to either, with ``default`` as the fallback. Every problem is reported at
once as a :class:`ConfigError` whose lines name the field (``attacks[2].name: unknown attack part 'foo'``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from advkit.attacks import create, parse, standalone

__all__ = ["AttackSpec", "ConfigError", "SampleSpec", "StudyConfig", "apply_overrides", "load_config",
           "parse_alpha", "parse_fraction"]

TOP_KEYS = {"title", "dataset", "data_dir", "data_options", "sources", "targets", "attacks", "eps", "steps", "alpha",
            "gamma", "seeds", "sample", "baseline", "batch_size", "shard_size", "device", "save_png", "save_tensors",
            "reference", "notes"}
SAMPLE_KEYS = {"n", "pool", "split", "only_correct", "seed", "order"}
ATTACK_KEYS = {"name", "label", "settings"}
CONNECTION_KEYS = ("residual", "dense", "none")


class ConfigError(ValueError):
    """The experiment file is invalid; ``problems`` lists ``"field: what is wrong"`` lines."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid experiment config:\n  " + "\n  ".join(self.problems))


def parse_fraction(value: Any, where: str) -> float:
    """A number or a fraction string (``"16/255"``, ``"0.1"``) as a float, exactly via :class:`Fraction`.

    Raises:
        ValueError: naming ``where`` when the value is not a finite number >= 0.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{where}: expected a number or a fraction like 16/255, got {value!r}")
    try:
        frac = Fraction(value.replace(" ", "")) if isinstance(value, str) else Fraction(value)
    except (ValueError, ZeroDivisionError, TypeError, OverflowError):
        raise ValueError(f"{where}: expected a number or a fraction like 16/255, got {value!r}") from None
    if frac < 0:
        raise ValueError(f"{where}: must be >= 0, got {value!r}")
    return float(frac)


def parse_alpha(value: Any, where: str, eps: Any) -> float:
    """A step size: absolute (``"2/255"``) or relative to the budget ``eps`` (``"eps/8"``, ``"eps*0.25"``),
    computed exactly with fractions so that ``eps/8`` at ``16/255`` equals ``2/255`` bit for bit."""
    if isinstance(value, str) and value.replace(" ", "").startswith("eps"):
        rest = value.replace(" ", "")[3:]
        e = Fraction(str(eps).replace(" ", "")) if isinstance(eps, str) else Fraction(eps)
        if rest[:1] in ("/", "*") and len(rest) > 1:
            try:
                f = Fraction(rest[1:])
            except (ValueError, ZeroDivisionError):
                f = None
            if f is not None and f > 0:
                return float(e / f if rest[0] == "/" else e * f)
        raise ValueError(f"{where}: expected a step size like 2/255, eps/8 or eps*0.25, got {value!r}")
    return parse_fraction(value, where)


def eps_label(value: Any) -> str:
    """The label of a budget as written (``"16/255"``, ``"0.1"``), spaces removed."""
    if isinstance(value, str):
        return value.replace(" ", "")
    if isinstance(value, float):
        return repr(value)
    return str(value)


@dataclass(frozen=True)
class AttackSpec:
    """One attack of the study.

    Attributes:
        name: a name of the grammar (``"sgm+mi"``) or a standalone attack.
        label: unique label in tables (default: the name).
        settings: keyword arguments for :func:`advkit.attacks.create`, overriding the study's steps / alpha /
            gamma.
    """

    name: str
    label: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_gamma(self) -> bool:
        """Whether the attack is an SGM composition (its cells multiply over the study's gammas)."""
        return self.name.lower() not in standalone() and "sgm" in parse(self.name)


@dataclass(frozen=True)
class SampleSpec:
    """Which images are attacked.

    Attributes:
        n: images attacked per seed.
        pool: how many eligible images to collect; each seed draws ``n`` of them (``pool == n``: every seed
            attacks the same images, so seeds vary only the attacks' randomness).
        split: dataset split.
        only_correct: keep only images that every model (sources and targets) classifies correctly.
        seed: seed of the order in which the split is scanned and of the per-seed draws.
        order: ``"random"`` (a seeded permutation of the split) or ``"first"`` (the split's order).
    """

    n: int = 100
    pool: int = 100
    split: str = "test"
    only_correct: bool = True
    seed: int = 0
    order: str = "random"


@dataclass(frozen=True)
class StudyConfig:
    """A validated transfer study; see the module docstring for the file format."""

    dataset: str
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    attacks: tuple[AttackSpec, ...]
    eps: tuple[str, ...]
    steps: int = 10
    alpha: str | None = None
    gamma: Any = 0.2
    seeds: tuple[int, ...] = (0,)
    sample: SampleSpec = field(default_factory=SampleSpec)
    baseline: str = "ifgsm"
    batch_size: int = 100
    shard_size: int | None = None
    device: str = "auto"
    save_png: int = 8
    save_tensors: bool = True
    data_dir: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] | None = None
    title: str = "Transfer study"
    notes: tuple[str, ...] = ()

    def eps_value(self, label: str) -> float:
        """The float value of an eps label."""
        return parse_fraction(label, "eps")

    def alpha_value(self, eps: str | None = None) -> float | None:
        """The step size at budget ``eps`` as a float, or ``None`` (each attack's default)."""
        if self.alpha is None:
            return None
        return parse_alpha(self.alpha, "alpha", eps if eps is not None else self.eps[0])

    def gammas_for(self, source: str, connections: str | None) -> tuple[float, ...]:
        """The SGM decays swept for ``source`` (whose card says ``connections``)."""
        g = self.gamma
        if isinstance(g, dict):
            g = g.get(source, g.get(connections or "", g.get("default", 0.2)))
        vals = g if isinstance(g, (list, tuple)) else [g]
        return tuple(float(v) for v in vals)

    def attack(self, label: str) -> AttackSpec:
        """The attack with this label."""
        for a in self.attacks:
            if a.label == label:
                return a
        raise KeyError(label)

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON/YAML-safe dict that :func:`load_config` reads back to an equal config."""
        d = asdict(self)
        for k in ("sources", "targets", "eps", "seeds", "notes"):
            d[k] = list(d[k])
        d["attacks"] = [{"name": a.name, "label": a.label, "settings": dict(a.settings)} for a in self.attacks]
        return d

    def digest(self) -> str:
        """SHA-256 of the canonical JSON of the settings that decide the results (not title, notes, reference,
        device or how many PNGs are saved): a resumed run must match it."""
        d = self.to_dict()
        for k in ("title", "notes", "reference", "device", "save_png", "shard_size"):
            d.pop(k, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``overrides`` applied; keys may be dotted (``"sample.n"``), and a nested
    dict merges into the existing mapping rather than replacing it."""
    out = copy.deepcopy(raw)
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            merged = dict(out[k])
            merged.update(v)
            out[k] = merged
        else:
            _set_dotted(out, k, v)
    return out


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()] if "," in value else [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


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
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
            problems.append(f"{w}: SGM gamma must be a number in (0, 1], got {v!r}")


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
            problems.append(f"{where}: unknown key(s) {sorted(extra)} (allowed: name, label, settings)")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{where}.name: missing attack name")
            continue
        name = name.strip().lower()
        if name not in standalone():
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
        label = item.get("label", name)
        if not isinstance(label, str) or not re.fullmatch(r"[A-Za-z0-9_.+\-]+", label):
            problems.append(f"{where}.label: use letters, digits and _ . + - only, got {label!r}")
            label = name
        out.append(AttackSpec(name=name, label=label, settings=dict(settings)))
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
    pool = _int(raw.get("pool", n), "sample.pool", problems, 1)
    if pool < n:
        problems.append(f"sample.pool: must be >= sample.n ({n}), got {pool}")
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
                      seed=_int(raw.get("seed", 0), "sample.seed", problems), order=str(order))


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
    eps_raw = _as_list(raw.get("eps", ["16/255"]))
    if not eps_raw:
        problems.append("eps: give at least one budget (e.g. ['16/255'])")
    eps: list[str] = []
    for i, e in enumerate(eps_raw):
        try:
            parse_fraction(e, f"eps[{i}]")
            eps.append(eps_label(e))
        except ValueError as err:
            problems.append(str(err))
    for e in sorted({x for x in eps if eps.count(x) > 1}):
        problems.append(f"eps: {e} is listed twice")
    steps = _int(raw.get("steps", 10), "steps", problems, 1)
    alpha = raw.get("alpha")
    if alpha is not None:
        try:
            parse_alpha(alpha, "alpha", 1)
            alpha = eps_label(alpha)
        except ValueError as err:
            problems.append(str(err))
    gamma = raw.get("gamma", 0.2)
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
    if baseline is None:
        baseline = "ifgsm" if "ifgsm" in labels or not labels else labels[0]
    elif baseline not in labels:
        problems.append(f"baseline: {baseline!r} is not the label of an attack ({', '.join(labels) or 'none'})")
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
        alpha_v = None if alpha is None else parse_alpha(alpha, "alpha", eps[0])
        for i, a in enumerate(attacks):
            kw: dict[str, Any] = {"eps": parse_fraction(eps[0], "eps")}
            if a.name not in standalone():
                kw["steps"] = 1 if parse(a.name)[0] == "fgsm" else steps
                if alpha_v is not None and parse(a.name)[0] != "fgsm":
                    kw["alpha"] = alpha_v
            try:
                for k, v in a.settings.items():
                    where = f"attacks[{i}].settings.{k}"
                    if k == "alpha" and isinstance(v, str):
                        v = parse_alpha(v, where, eps[0])
                    elif k == "eps" and isinstance(v, str):
                        v = parse_fraction(v, where)
                    kw[k] = v
                create(a.name, **kw)
            except ValueError as e:
                msg = str(e)
                problems.append(msg if msg.startswith(f"attacks[{i}]") else f"attacks[{i}].settings: {msg}")
            except TypeError as e:
                problems.append(f"attacks[{i}].settings: {e}")
    if problems:
        raise ConfigError(problems)
    return StudyConfig(
        dataset=dataset, sources=tuple(sources), targets=tuple(targets), attacks=tuple(attacks), eps=tuple(eps),
        steps=steps, alpha=alpha, gamma=gamma, seeds=tuple(seeds), sample=sample, baseline=str(baseline),
        batch_size=batch_size, shard_size=shard, device=str(device), save_png=save_png, save_tensors=save_tensors,
        data_dir=None if raw.get("data_dir") is None else str(raw["data_dir"]), data_options=dict(data_options),
        reference=reference, title=str(title), notes=tuple(str(n) for n in notes),
    )


def load_config(source: str | Path | dict[str, Any] | StudyConfig,
                overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read and validate an experiment: a YAML file path, a dict, or a config (re-validated with overrides).

    Args:
        source: the experiment.
        overrides: settings that replace the file's (``{"eps": ["8/255"], "sample.n": 50}``), e.g. from the CLI.

    Raises:
        ConfigError: every problem found, each naming its field.
        FileNotFoundError: the YAML file does not exist.
    """
    if isinstance(source, StudyConfig):
        raw = source.to_dict()
    elif isinstance(source, dict):
        raw = source
    else:
        path = Path(source)
        text = path.read_text(encoding="utf-8")
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError([f"(file {path}): not valid YAML: {e}"]) from e
    return validate(apply_overrides(raw, overrides))
