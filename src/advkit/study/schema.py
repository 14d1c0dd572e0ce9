"""The transfer study's experiment: its schema (:class:`StudyConfig`), exact fractions, and overrides.

Read and validated by :func:`advkit.study.config.load_config` (checks in :mod:`advkit.study.validate`).

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
eps/8`` (the SGM paper's 2/255 at 16/255) or ``alpha: eps*0.25``.

``eps`` bounds each attack in its own norm: L-inf for the gradient attacks, square and nes, L2 for hsj and simba
(``settings: {norm: linf}`` changes an attack's norm where it has one). One eps list is for one norm: an attack of
another norm takes its own list in its entry, ``{name: hsj, eps: [0.5, 1.0]}`` (its cells, tables and headings
use those budgets), and every table says the norm (``eps 0.1 (L-inf)``, ``eps 0.5 (L2)``).

Any list in an attack's ``settings`` is swept: ``{name: mi, settings: {decay: [0.5, 1.0]}}`` is two attacks of the
tables, ``mi decay=0.5`` and ``mi decay=1.0`` (:mod:`advkit.study.sweep`); an attack whose settings have one value
each keeps its label.

``gamma`` (the SGM decay) is an ordinary setting of the attacks whose name contains ``sgm``: ``settings: {gamma:
0.5}``, a list (a sweep), or ``auto`` (the default: each source's model card ``sgm_gamma``, advkit's zoo value
chosen on held-out images, else the authors' 0.2 for ResNets and 0.5 for DenseNets). Its values are recorded in
the records' ``gamma`` column (``sgm (γ=0.2)``), not in the label. The study-wide ``gamma`` key is the default of
every SGM attack that sets none: a value, a list, or a mapping from a source name or its connection kind
(``residual``, ``dense``) to either, with ``default`` as the fallback.

``targeted`` makes the study targeted (absent: untargeted; see :class:`StudyConfig`): ``random`` (for each image a
seeded class other than its label, drawn from ``sample.seed``, the seed and the image's place in the pool: the same
for every source and attack), ``least_likely`` (the class the *source* scores lowest on the clean image, the
classic definition of Kurakin et al., ICLR 2017 workshop, so each source has its own targets) or a class of the
dataset (an index such as ``3`` or a name such as ``Dress``; images of that class are left out of the sample, since
they cannot be moved to their own class). Success is then the share of images a model labels with the target
(``targeted success``), and the untargeted fooling rate (label != true class) is recorded beside it; the paired
McNemar tests compare targeted success. Artefact attacks (``uap:``, ``generator:``) cannot be targeted.

A source or target may be an ensemble: ``ensemble:A+B+C`` or ``{ensemble: [A, B, C], fuse: logits, weights: [..]}``;
``holdout: true`` (no ``sources``) attacks each target with the ensemble of the others (:mod:`advkit.study.ensembles`).
A source or target may be a defended model: ``defended:jpeg[quality=50]:lenet`` or ``{model: lenet, defence: {name:
jpeg, quality: 50}}`` (:mod:`advkit.study.defended`).
Every
problem is reported at once as a
:class:`~advkit.study.errors.ConfigError` whose lines name the field (``attacks[2].name: unknown attack part
'foo'``).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

from advkit.attacks import parse, standalone_key

__all__ = ["AttackSpec", "SampleSpec", "StudyConfig", "apply_overrides", "eps_label", "norm_label", "parse_alpha",
           "parse_fraction"]

NORM_LABELS = {"linf": "L-inf", "l2": "L2", "l0": "L0"}


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


def norm_label(norm: str | None) -> str:
    """How tables write a norm: ``"linf" -> "L-inf"``, ``"l2" -> "L2"``."""
    return NORM_LABELS.get(str(norm), str(norm))


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
            gamma (not eps: see ``eps``); a list is swept (:mod:`advkit.study.sweep`).
        eps: the attack's own budgets (labels as written), used instead of the study's ``eps`` list; empty: the
            study's.
        norm: the norm its budgets bound (``"linf"``, ``"l2"``, ``"l0"``), found by building the attack when the
            experiment is validated; not part of the file.
    """

    name: str
    label: str
    settings: dict[str, Any] = field(default_factory=dict)
    eps: tuple[str, ...] = ()
    norm: str = "linf"

    @property
    def uses_gamma(self) -> bool:
        """Whether the attack is an SGM composition (its cells multiply over its decays, recorded as ``gamma``)."""
        return standalone_key(self.name) is None and "sgm" in parse(self.name)


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
        start, stop: scan only positions ``[start, stop)`` of that order (``stop`` ``None``: to the end); with
            ``order: first`` these are the split's own indices (``range: [5000, 10000]`` in the file: the second
            half of a 10,000-image test split).
        pool_all: the pool is every eligible image in the range (``pool: all`` in the file); ``pool`` is then
            the number found, known once the sample is chosen.
        draw: how each seed draws its ``n`` images from the pool: ``"mixed"`` (a generator seeded from
            ``(sample.seed, seed)``) or ``"seed"`` (``torch.randperm(pool, generator=manual_seed(seed))[:n]``,
            the protocol of the SGM benchmark tables, so the same seed draws the same images there and here).
    """

    n: int = 100
    pool: int = 100
    split: str = "test"
    only_correct: bool = True
    seed: int = 0
    order: str = "random"
    start: int = 0
    stop: int | None = None
    pool_all: bool = False
    draw: str = "mixed"


@dataclass(frozen=True)
class StudyConfig:
    """A validated transfer study: the experiment file's keys (see the module docstring for the format).

    Attributes:
        dataset: the dataset (``fashion-mnist``, ``mnist``, ``cifar10``, ``imagefolder``, ...).
        sources: the models the examples are crafted on: zoo names, ``.safetensors`` paths, ``torchvision:NAME``
            or ``timm:NAME``.
        targets: the models evaluated on every source's examples (a source listed here too gives its white-box
            column).
        attacks: the attacks, each a name or ``{name, label, settings, eps}``; a list in ``settings`` is swept.
        eps: the budgets (``"16/255"``, ``0.1``), in the norm of the attacks that share them.
        steps: iterations of the iterative attacks (FGSM takes one).
        alpha: step size: absolute (``2/255``) or relative to each budget (``eps/8``); unset: each attack's own.
        gamma: SGM's decay for the SGM attacks that set none in their settings: ``auto``, a number, a list (a
            sweep), or a mapping from a source or its connection kind (``residual``, ``dense``, ``default``).
        seeds: the seeds; each draws its images and the attacks' randomness.
        sample: which images are attacked (see :class:`SampleSpec`).
        baseline: the attack (label) every other is compared with (McNemar); the file may list several.
        also_compare: further baselines (the rest of the file's ``baseline`` list).
        batch_size: images per attack batch.
        shard_size: images per unit of work (a multiple of ``batch_size``); unset: a whole cell.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        save_png: how many examples of each cell are saved as 8-bit PNGs.
        save_tensors: keep every adversarial example (float32 and 8-bit) in the run directory.
        data_dir: where the dataset's files are (default: advkit's data folder).
        data_options: options of the dataset loader (``{size: 224, resize: 256}`` for ``imagefolder``).
        reference: paper numbers to compare with in the report (``{citation, baseline, eps, rows: [...]}``).
        title: the report's title.
        notes: lines added to the report.
        targeted: ``None`` (untargeted), ``"random"``, ``"least_likely"``, or a class: its index (an ``int``) or,
            for datasets whose classes the data decides (``imagefolder``), its name; the file may name a class of
            a dataset with fixed classes, which is stored as its index.
        holdout: the hold-out protocol (``holdout: true``; :mod:`advkit.study.ensembles`): ``sources`` are then
            the hold-out ensembles of the targets (``ensemble:B+C`` for target ``A``), each evaluated on the target
            it leaves out; the file gives no ``sources``.
    """

    dataset: str
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    attacks: tuple[AttackSpec, ...]
    eps: tuple[str, ...]
    steps: int = 10
    alpha: str | None = None
    gamma: Any = "auto"
    seeds: tuple[int, ...] = (0,)
    sample: SampleSpec = field(default_factory=SampleSpec)
    baseline: str = "ifgsm"
    also_compare: tuple[str, ...] = ()
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
    targeted: str | int | None = None
    holdout: bool = False

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
        d["attacks"] = [{"name": a.name, "label": a.label, "settings": dict(a.settings), **({"eps": list(a.eps)}
                         if a.eps else {})} for a in self.attacks]
        # Options added later appear only when set, so that earlier runs keep their digest and resume.
        also = d.pop("also_compare")
        if also:
            d["baseline"] = [self.baseline, *also]
        smp = d["sample"]
        start, stop, pool_all, draw = smp.pop("start"), smp.pop("stop"), smp.pop("pool_all"), smp.pop("draw")
        if stop is not None:
            smp["range"] = [start, stop]
        if pool_all:
            smp["pool"] = "all"
        if draw != "mixed":
            smp["draw"] = draw
        if d["targeted"] is None:
            del d["targeted"]
        if d.pop("holdout"):  # the sources are derived from the targets
            d["holdout"], d["sources"] = True, []
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
