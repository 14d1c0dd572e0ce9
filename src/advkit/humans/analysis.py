"""The analysis of a human perception study's answers (``RUN_DIR/humans.sqlite``): what people saw in JSMA's
adversarial samples, against clean controls, the attacked model and the distance proxy.

Papernot et al., "The Limitations of Deep Learning in Adversarial Settings" (EuroS&P 2016), asked people two
questions about adversarial samples: "is this a numeric digit?" and "what digit is it?". :func:`humans_study` reads
the answers of a study run by ``advkit humans serve`` (read-only, straight from the SQLite file) and reports, per
item kind (adversarial, control), the share of answers calling the image a digit, labelling it with its source
class and (adversarial items) with the attacker's target class, overall and per (source, target) pair / per class.

Attention rule: a participant is kept when at least ``min_attention`` (default 2/3, i.e. 2 of 3 checks) of the
attention checks they answered are correct (``is_digit`` yes and the label equal to the image's true class);
participants with no attention answer yet are dropped and counted. Only kept participants' answers count;
unfinished participants who pass are kept (how many answers they contribute is reported).

Intervals: cluster bootstrap over participants (answers of one person are not independent): participants are drawn
with replacement ``n_boot`` times (numpy, seeded), each share recomputed from the drawn participants' answers, and
the 2.5th and 97.5th percentiles kept. The model's shares (its prediction on the shown image, over the distinct
items people answered) get Wilson intervals over items. The proxy (:mod:`advkit.analysis.perception`) gives, for
the same adversarial items, the L2 distance to the nearest clean training image of the source and of the target
class.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advkit._files import atomic_write_text, csv_text
from advkit.analysis.perception import jsma_examples, nearest_distance
from advkit.data import get_spec
from advkit.data import load as load_data
from advkit.evaluate.metrics import wilson_interval
from advkit.humans import store

__all__ = ["DEFAULT_ATTENTION", "HumansStudy", "Share", "export_csv", "humans_study", "read_answers",
           "write_answers_csv"]

DEFAULT_ATTENTION = Fraction(2, 3)
KINDS = ("adversarial", "control")
MEASURES = {"adversarial": ("is_digit", "source", "target"), "control": ("is_digit", "source")}


@dataclass(frozen=True)
class Share:
    """A share with its 95% interval and what it rests on (``value`` NaN when no answer)."""

    value: float
    low: float
    high: float
    answers: int
    participants: int

    def text(self) -> str:
        """``"92% [88, 95]"`` (``"-"`` without answers)."""
        if not self.answers:
            return "-"
        return f"{100 * self.value:.0f}% [{100 * self.low:.0f}, {100 * self.high:.0f}]"


@dataclass
class HumansStudy:
    """The study's figures (see the module docstring for the rule and the intervals).

    Attributes:
        overall: ``overall[kind][measure]`` (kind ``adversarial`` / ``control``; measure ``is_digit``, ``source``,
            ``target``) over every kept answer.
        pairs: per (source, target) pair of adversarial items: ``source``, ``target``, ``items``, ``people`` (the
            shares by measure, as in ``overall``), ``model_target``, ``proxy_nearer_target``, ``proxy_ratio``.
        per_class: per class of control items: ``source``, ``items`` and ``people``.
        model: ``adversarial_target``, ``adversarial_source``, ``control_source``: the model's prediction on the
            shown images of the distinct answered items, as shares with Wilson intervals (``participants`` 0).
        proxy: ``examples``, ``share_nearer_target`` and ``mean_ratio`` (distance to the source class over
            distance to the target class) of the answered adversarial items' examples.
        counts: participants (``total``, ``kept``, ``dropped_attention``, ``dropped_no_attention``,
            ``unfinished_kept``, ``unfinished_answers``) and ``answers`` / ``kept_answers``.
        answers: every answer joined with its item and its participant's ``status``.
    """

    dataset: str
    classes: tuple[str, ...]
    min_attention: Fraction
    n_boot: int
    overall: dict[str, dict[str, Share]]
    pairs: list[dict[str, Any]]
    per_class: list[dict[str, Any]]
    model: dict[str, Share]
    proxy: dict[str, Any]
    counts: dict[str, int]
    answers: list[dict[str, Any]] = field(repr=False)

    @property
    def rule(self) -> str:
        """The attention rule in words."""
        return (f"a participant is kept when at least {self.min_attention} of the attention checks they answered are "
                f"correct (answered 'yes, a digit' and the image's true class); participants without an attention "
                f"answer are dropped")


def _connect(run_dir: str | Path) -> sqlite3.Connection:
    path = Path(run_dir) / store.DB_NAME
    if not path.is_file():
        raise ValueError(f"{run_dir} has no humans.sqlite: no study was run on it; start one with "
                         f"`advkit humans serve {run_dir}`")
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    con.execute("PRAGMA busy_timeout = 5000")
    return con


def read_answers(run_dir: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any], list[tuple[str, Any]]]:
    """Every answer of ``RUN_DIR/humans.sqlite`` joined with its item (read-only, :func:`store.export_rows`), the
    ``meta`` table (:func:`store.meta`), and every participant as ``(id, finished)``."""
    con = _connect(run_dir)
    con.row_factory = sqlite3.Row
    try:
        rows = store.export_rows(con)
        meta = store.meta(con)
        people = [(r[0], r[1]) for r in con.execute("SELECT id, finished FROM participants ORDER BY id")]
    except sqlite3.DatabaseError as e:
        raise ValueError(f"{run_dir}/humans.sqlite is not a study file advkit can read ({e})") from e
    finally:
        con.close()
    return rows, meta, people


def _statuses(rows: list[dict[str, Any]], people: list[tuple[str, Any]], rule: Fraction) -> dict[str, str]:
    """``participant -> "kept" | "dropped: attention" | "dropped: no attention answer"``; each row gets its
    participant's ``status`` and ``finished`` (bool)."""
    checks: dict[str, list[bool]] = {p: [] for p, _ in people}
    for r in rows:
        if r["kind"] == "attention":
            checks.setdefault(r["participant"], []).append(bool(r["is_digit"]) and r["label"] == r["source"])
    status = {p: ("dropped: no attention answer" if not c else
                  "kept" if Fraction(sum(c), len(c)) >= rule else "dropped: attention") for p, c in checks.items()}
    finished = dict(people)
    for r in rows:
        r["status"], r["finished"] = status[r["participant"]], finished.get(r["participant"]) is not None
    return status


def _rule(min_attention: Fraction | float) -> Fraction:
    return Fraction(min_attention).limit_denominator(10_000)


def cluster_share(participant: np.ndarray, hit: np.ndarray, n_boot: int, seed: int) -> Share:
    """The share of ``hit`` with a participant-cluster bootstrap 95% percentile interval.

    Args:
        participant: ``(A,)`` the participant of each answer (any hashable ids).
        hit: ``(A,)`` bool, the answer counts toward the share.
        n_boot: bootstrap draws.
        seed: the numpy generator's seed.
    """
    if hit.size == 0:
        return Share(float("nan"), float("nan"), float("nan"), 0, 0)
    ids, inverse = np.unique(participant, return_inverse=True)
    k = np.bincount(inverse, weights=hit.astype(float))
    n = np.bincount(inverse).astype(float)
    draw = np.random.default_rng(seed).integers(0, ids.size, size=(n_boot, ids.size))
    boot = k[draw].sum(axis=1) / n[draw].sum(axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    value = float(k.sum() / n.sum())
    return Share(value, float(low), float(high), int(hit.size), int(ids.size))


def _model_share(hit: np.ndarray) -> Share:
    if hit.size == 0:
        return Share(float("nan"), float("nan"), float("nan"), 0, 0)
    low, high = wilson_interval(int(hit.sum()), int(hit.size))
    return Share(float(hit.mean()), low, high, int(hit.size), 0)


def _people(sub: list[dict[str, Any]], kind: str, n_boot: int, seed: int) -> dict[str, Share]:
    who = np.array([r["participant"] for r in sub], dtype=object)
    label = np.array([r["label"] for r in sub], dtype=np.int64)
    hits = {"is_digit": np.array([r["is_digit"] == 1 for r in sub], dtype=bool),
            "source": label == np.array([r["source"] for r in sub], dtype=np.int64)}
    if kind == "adversarial":
        hits["target"] = label == np.array([r["target"] for r in sub], dtype=np.int64)
    return {m: cluster_share(who, hits[m], n_boot, seed) for m in MEASURES[kind]}


def _proxy(run_dir: str | Path, examples: np.ndarray, reference: str) -> tuple[np.ndarray, np.ndarray]:
    """The distances (as :func:`~advkit.analysis.perception.perception_study` measures them) of the JSMA examples
    at ``examples`` (rows of ``jsma_examples(run_dir)``) to the nearest ``reference`` image of their source class
    and of their target class."""
    ex = jsma_examples(run_dir)
    if examples.size and int(examples.max()) >= len(ex["source"]):
        raise ValueError(f"humans.sqlite names example {int(examples.max())} but the run has {len(ex['source'])} "
                         f"examples: the study was made on another run")
    ref = load_data(ex["dataset"], reference)
    base = reference.split("[")[0]
    src, tgt, rows = ex["source"][examples], ex["target"][examples], ex["row"][examples]
    d_src, d_tgt = np.full(examples.size, np.nan), np.full(examples.size, np.nan)
    for c in np.union1d(src, tgt):
        members = (ref.y == int(c)).nonzero().flatten()
        member_rows = (ref.indices[members] if ref.indices is not None else members).numpy()
        pos = {int(r): i for i, r in enumerate(member_rows)}
        as_src, as_tgt = np.flatnonzero(src == c), np.flatnonzero(tgt == c)
        if as_src.size:  # an attacked reference row's own original is skipped, as in perception_study
            own = torch.tensor([pos.get(int(rows[i]), -1) if ex["base"][examples[i]] == base else -1 for i in as_src])
            d_src[as_src] = nearest_distance(ex["x_adv"][examples[as_src]], ref.x[members], exclude=own).numpy()
        if as_tgt.size:
            d_tgt[as_tgt] = nearest_distance(ex["x_adv"][examples[as_tgt]], ref.x[members]).numpy()
    return d_src, d_tgt


def humans_study(run_dir: str | Path, *, min_attention: Fraction | float = DEFAULT_ATTENTION, n_boot: int = 2000,
                 seed: int = 0, reference: str = "train") -> HumansStudy:
    """Analyse the answers in ``RUN_DIR/humans.sqlite`` (see the module docstring for the rule and the intervals).

    Args:
        run_dir: the JSMA run the study was made on (its ``humans.sqlite``; ``example`` columns index
            ``jsma_examples(run_dir)``).
        min_attention: the share of a participant's answered attention checks that must be correct, in ``(0, 1]``.
        n_boot: bootstrap draws (>= 1).
        seed: the bootstrap's seed.
        reference: the clean split the proxy compares with (the attacked model's training rows).

    Raises:
        ValueError: no ``humans.sqlite`` (start a study with ``advkit humans serve``), no answers yet, no
            participant passing the attention rule, bad settings.
    """
    rule = _rule(min_attention)
    if not 0 < rule <= 1:
        raise ValueError(f"min_attention must be in (0, 1], got {min_attention} (e.g. --min-attention 2/3)")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot} (e.g. --boot 2000)")
    rows, meta, people = read_answers(run_dir)
    if not rows:
        raise ValueError(f"{run_dir}/humans.sqlite holds no answers yet ({len(people)} participants): run the study "
                         f"(`advkit humans serve {run_dir}`) and analyse it once people have answered")
    status = _statuses(rows, people, rule)
    kept = [p for p, s in status.items() if s == "kept"]
    if not kept:
        raise ValueError(f"no participant passes the attention rule ({len(status)} participants, none with at least "
                         f"{rule} of their attention checks right); lower it with --min-attention (e.g. 1/3) or "
                         f"collect more answers")
    use = [r for r in rows if r["status"] == "kept" and r["kind"] in KINDS]
    by_kind = {k: [r for r in use if r["kind"] == k] for k in KINDS}
    overall = {k: _people(by_kind[k], k, n_boot, seed) for k in KINDS}
    adv_items = {r["item"]: r for r in by_kind["adversarial"]}
    ctl_items = {r["item"]: r for r in by_kind["control"]}
    examples = np.array(sorted({int(r["example"]) for r in adv_items.values()}), dtype=np.int64)
    d_src, d_tgt = _proxy(run_dir, examples, reference) if examples.size else (np.zeros(0), np.zeros(0))
    ratio = dict(zip(examples.tolist(), (d_src / d_tgt).tolist(), strict=True))

    def model(items: dict[int, dict[str, Any]], col: str) -> np.ndarray:
        return np.array([r["model_pred"] == r[col] for r in items.values()], dtype=bool)

    pairs = []
    for s, t in sorted({(r["source"], r["target"]) for r in by_kind["adversarial"]}):
        sub = [r for r in by_kind["adversarial"] if (r["source"], r["target"]) == (s, t)]
        items = {r["item"]: r for r in sub}
        rs = np.array([ratio[int(r["example"])] for r in items.values()])
        pairs.append({"source": s, "target": t, "items": len(items),
                      "people": _people(sub, "adversarial", n_boot, seed),
                      "model_target": _model_share(model(items, "target")),
                      "proxy_nearer_target": float(np.mean(rs > 1)), "proxy_ratio": float(np.mean(rs))})
    per_class = []
    for c in sorted({r["source"] for r in by_kind["control"]}):
        sub = [r for r in by_kind["control"] if r["source"] == c]
        per_class.append({"source": c, "items": len({r["item"] for r in sub}),
                          "people": _people(sub, "control", n_boot, seed)})
    all_ratio = d_src / d_tgt
    dataset = meta.get("dataset") or jsma_examples(run_dir)["dataset"]
    spec_classes = tuple(get_spec(dataset).classes) or tuple(str(i) for i in range(10))
    unfinished = {p for p, f in people if f is None and status.get(p) == "kept"}
    counts = {"total": len(status), "kept": len(kept),
              "dropped_attention": sum(s == "dropped: attention" for s in status.values()),
              "dropped_no_attention": sum(s == "dropped: no attention answer" for s in status.values()),
              "unfinished_kept": len(unfinished),
              "unfinished_answers": sum(r["participant"] in unfinished and r["kind"] in KINDS for r in rows),
              "answers": len(rows), "kept_answers": len(use)}
    return HumansStudy(dataset, spec_classes, rule, n_boot, overall, pairs, per_class,
                       {"adversarial_target": _model_share(model(adv_items, "target")),
                        "adversarial_source": _model_share(model(adv_items, "source")),
                        "control_source": _model_share(model(ctl_items, "source"))},
                       {"examples": int(examples.size),
                        "share_nearer_target": float(np.mean(all_ratio > 1)) if examples.size else float("nan"),
                        "mean_ratio": float(np.mean(all_ratio)) if examples.size else float("nan"),
                        "reference": reference},
                       counts, rows)


EXPORT_COLUMNS = ("participant", "status", "finished", "item", "kind", "source", "target", "example", "clean_index",
                  "model_pred", "is_digit", "label", "label_is_source", "label_is_target", "seconds", "answered_at")


def export_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The CSV export's records (:data:`EXPORT_COLUMNS`), one per answer."""
    out = []
    for r in rows:
        full = {**r, "label_is_source": int(r["label"] == r["source"]),
                "label_is_target": "" if r["target"] is None else int(r["label"] == r["target"]),
                "finished": int(bool(r["finished"]))}
        out.append({c: full[c] for c in EXPORT_COLUMNS})
    return out


def export_csv(run_dir: str | Path, path: str | Path, *, min_attention: Fraction | float = DEFAULT_ATTENTION) -> Path:
    """Write every answer of ``RUN_DIR/humans.sqlite`` joined with its item and its participant's status (kept or
    dropped, under the attention rule ``min_attention``) to the CSV file ``path``; returns ``path``.

    Raises:
        ValueError: no ``humans.sqlite`` in ``run_dir``.
    """
    rows, _, people = read_answers(run_dir)
    _statuses(rows, people, _rule(min_attention))
    return write_answers_csv(rows, path)


def write_answers_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write answers carrying their participant's ``status`` and ``finished`` (:attr:`HumansStudy.answers`) to the
    CSV file ``path`` in the columns :data:`EXPORT_COLUMNS` (the header alone without answers); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, csv_text(export_rows(rows)) if rows else ",".join(EXPORT_COLUMNS) + "\n")
    return path
