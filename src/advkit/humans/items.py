"""The items of a human perception study and who sees which (issue 28).

Papernot et al., "The Limitations of Deep Learning in Adversarial Settings" (EuroS&P 2016), Section V-C, showed
people JSMA's adversarial samples and asked "is this a numeric digit?" and "what digit is it?". The item set is built
once from a finished ``advkit reproduce jsma`` run:

- ``adversarial``: every successful example (:func:`advkit.analysis.perception.jsma_examples` order), as the 8-bit
  image the run saved; ``model_pred`` is the attacked model's prediction on that 8-bit image.
- ``control``: clean images of every class from the run's split (not the attacked ones), a few per class.
- ``attention``: clean images the model classifies correctly with the highest confidence, one or more per class:
  unambiguous, so a participant who mislabels them was not paying attention.

:func:`choose_items` assigns a participant ``items_per_participant`` items: the attention checks, about 20% controls
spread over the classes, and adversarial items from the (source, target) pairs with the fewest assignments so far
(then the least-assigned item of the pair, ties at random), so every pair gets answers evenly; in a random order.
"""

from __future__ import annotations

import io
import json
import math
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["CONTROL_SHARE", "build_items", "choose_items", "open_study", "questions", "study_settings"]

CONTROL_SHARE = 0.2  # of each participant's items
QUESTIONS = {  # the paper's two questions, per dataset: (is it one?, which one?)
    "mnist": ("Is this a numeric digit?", "Which digit is it?"),
    "fashion-mnist": ("Is this a piece of clothing?", "Which item is it?"),
    "cifar10": ("Is this a photo of one of the objects listed?", "Which one is it?"),
}


def questions(dataset: str) -> tuple[str, str]:
    """The two questions asked of each image for ``dataset`` (the paper's wording for MNIST)."""
    return QUESTIONS.get(dataset, ("Is this a clear picture of one of the listed classes?", "Which class is it?"))


def study_settings(items_per_participant: int, attention_checks: int, seed: int, dataset: str,
                   classes: list[str]) -> dict[str, Any]:
    """The ``settings`` stored in ``meta`` (checked again when a study is served again)."""
    if items_per_participant < 1:
        raise ValueError(f"items per participant must be at least 1, got {items_per_participant} (--items)")
    if not 0 <= attention_checks < items_per_participant:
        raise ValueError(f"attention checks must be between 0 and items per participant - 1, got "
                         f"{attention_checks} (--attention)")
    is_one, which = questions(dataset)
    return {"items_per_participant": int(items_per_participant), "attention_checks": int(attention_checks),
            "seed": int(seed), "control_share": CONTROL_SHARE, "classes": list(classes),
            "questions": {"is_digit": is_one, "label": which}}


def _png(x: torch.Tensor) -> bytes:
    """An 8-bit PNG of one image ``(C, H, W)`` in ``[0, 1]`` (grey for one channel, RGB for three)."""
    from PIL import Image

    a = torch.round(x.clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
    img = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _run_model(folder: str) -> str:
    """The model a JSMA run attacked, as its ``results.json`` names it (``extra.model``, else ``summary.model``)."""
    payload = json.loads((Path(folder) / "results.json").read_text())
    return str((payload.get("extra") or {}).get("model") or payload["summary"]["model"])


def _probs(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities ``(N, K)`` of ``model`` on ``x``, batched, without gradients."""
    from advkit.models import frozen_eval

    out = []
    with torch.no_grad(), frozen_eval(model):
        for i in range(0, x.shape[0], 500):
            out.append(torch.softmax(model(x[i:i + 500]).float(), 1))
    return torch.cat(out) if out else torch.empty(0, 0)


def build_items(run_dir: str | Path, items_per_participant: int = 40, attention_checks: int = 3,
                seed: int = 0) -> tuple[dict[str, str], dict[str, Any], list[dict[str, Any]]]:
    """The item set of a finished JSMA run: ``(info, settings, items)`` for :func:`advkit.humans.store.write_study`.

    Raises:
        ValueError: ``run_dir`` is not a finished ``advkit reproduce jsma`` run (or kept no examples), it has no
            successful example, or the dataset has more than 10 classes (answers are keys 0-9).
    """
    import time

    from advkit.analysis.perception import check_jsma_run, jsma_examples
    from advkit.data import load as load_data
    from advkit.models import load as load_model

    check_jsma_run(run_dir)
    ex = jsma_examples(run_dir)
    if ex["x_adv"].shape[0] == 0:
        raise ValueError(f"{run_dir}: the JSMA run has no successful adversarial example to show; run it on more "
                         f"samples (`advkit reproduce jsma --samples N`)")
    dataset = str(ex["dataset"])
    base = str(ex["base"][0])
    clean = load_data(dataset, base)
    classes = list(clean.classes)
    if len(classes) > 10:
        raise ValueError(f"{dataset} has {len(classes)} classes; the study's answers are the keys 0-9 (10 classes "
                         f"at most)")
    settings = study_settings(items_per_participant, attention_checks, seed, dataset, classes)
    model = load_model(_run_model(ex["folders"][0]), dataset=dataset)
    x_adv = torch.round(ex["x_adv"] * 255) / 255
    adv_pred = _probs(model, x_adv).argmax(1)
    items: list[dict[str, Any]] = [
        {"kind": "adversarial", "source": int(s), "target": int(t), "example": k, "clean_index": None,
         "model_pred": int(p), "png": _png(x)}
        for k, (x, s, t, p) in enumerate(zip(x_adv, ex["source"], ex["target"], adv_pred.tolist(), strict=True))]

    rng = np.random.default_rng(seed)
    attacked = set(int(r) for r, b in zip(ex["row"], ex["base"], strict=True) if b == base)
    rows = np.array([r for r in rng.permutation(clean.x.shape[0])[:3000].tolist() if r not in attacked])
    x8 = torch.round(clean.x[torch.from_numpy(rows)] * 255) / 255
    y = clean.y[torch.from_numpy(rows)].numpy()
    probs = _probs(model, x8)
    pred, conf = probs.argmax(1).numpy(), probs.max(1).values.numpy()
    k = len(classes)
    n_adv = len(items)
    per_class = max(3, math.ceil(n_adv * CONTROL_SHARE / k))
    att_per_class = max(1, math.ceil(attention_checks / k))
    used: set[int] = set()
    for c in range(k):  # attention: the most confident correct images of class c
        ok = np.flatnonzero((y == c) & (pred == c))
        for j in ok[np.argsort(-conf[ok], kind="stable")][:att_per_class]:
            used.add(int(j))
            items.append({"kind": "attention", "source": c, "target": None, "example": None,
                          "clean_index": int(rows[j]), "model_pred": int(pred[j]), "png": _png(x8[j])})
    for c in range(k):  # controls: the first images of class c in the seeded order
        for j in [j for j in np.flatnonzero(y == c).tolist() if j not in used][:per_class]:
            items.append({"kind": "control", "source": c, "target": None, "example": None,
                          "clean_index": int(rows[j]), "model_pred": int(pred[j]), "png": _png(x8[j])})
    for i, item in enumerate(items, start=1):
        item["id"] = i
    info = {"dataset": dataset, "run_dir": str(Path(run_dir).resolve()), "created": str(time.time()),
            "split": base}
    return info, settings, items


def _least(rng: np.random.Generator, keys: list[Any], count: Counter[Any]) -> Any:
    """The key with the fewest ``count``, ties broken at random."""
    low = min(count[key] for key in keys)
    ties = [key for key in keys if count[key] == low]
    return ties[int(rng.integers(len(ties)))]


def choose_items(conn: sqlite3.Connection, n_participant: int, settings: dict[str, Any]) -> list[int]:
    """The item ids a new participant sees, in order (call inside the transaction that stores them).

    Attention checks and controls go to the least-assigned items (controls spread over the classes), adversarial
    items to the least-assigned (source, target) pair, then the pair's least-assigned item; no item twice. The
    random tie-breaks and the order come from ``(seed, n_participant)``.
    """
    rng = np.random.default_rng([int(settings["seed"]), int(n_participant)])
    rows = conn.execute("SELECT i.id, i.kind, i.source, i.target, COUNT(a.item) AS n FROM items i "
                        "LEFT JOIN assignments a ON a.item = i.id GROUP BY i.id ORDER BY i.id").fetchall()
    uses: Counter[Any] = Counter({r["id"]: r["n"] for r in rows})
    by_kind: dict[str, list[Any]] = {"adversarial": [], "control": [], "attention": []}
    for r in rows:
        by_kind[r["kind"]].append(r)
    n = int(settings["items_per_participant"])
    n_att = min(int(settings["attention_checks"]), len(by_kind["attention"]))
    n_ctrl = min(round(n * float(settings.get("control_share", CONTROL_SHARE))), len(by_kind["control"]))
    n_adv = min(n - n_att - n_ctrl, len(by_kind["adversarial"]))
    n_ctrl = min(n - n_att - n_adv, len(by_kind["control"]))  # fewer adversarial items than asked: more controls
    chosen: list[int] = []

    def draw(pool: list[Any], how_many: int, group: str) -> None:
        group_uses: Counter[Any] = Counter()
        for r in pool:
            group_uses[r[group]] += uses[r["id"]]
        left = list(pool)
        for _ in range(how_many):
            g = _least(rng, sorted({r[group] for r in left}), group_uses)
            item = _least(rng, [r["id"] for r in left if r[group] == g], uses)
            left = [r for r in left if r["id"] != item]
            group_uses[g] += 1
            uses[item] += 1
            chosen.append(int(item))

    draw(by_kind["attention"], n_att, "source")
    draw(by_kind["control"], n_ctrl, "source")
    pairs = [dict(r) | {"pair": (r["source"], r["target"])} for r in by_kind["adversarial"]]
    draw(pairs, n_adv, "pair")
    return [chosen[i] for i in rng.permutation(len(chosen))]


def open_study(run_dir: str | Path, items_per_participant: int = 40, attention_checks: int = 3,
               seed: int = 0) -> dict[str, Any]:
    """Create ``RUN_DIR/humans.sqlite`` with its items (built once), or check that an existing study was made with
    the same settings; returns the stored ``meta`` (``settings`` parsed).

    Raises:
        ValueError: not a finished JSMA run, or the existing study's settings differ (the message says how to start
            a new study).
    """
    from advkit.analysis.perception import check_jsma_run
    from advkit.humans.store import DB_NAME, connect, meta, write_study

    check_jsma_run(run_dir)  # before anything is written into the folder
    path = Path(run_dir) / DB_NAME
    conn = connect(path)
    try:
        if conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 0:
            write_study(conn, *build_items(run_dir, items_per_participant, attention_checks, seed))
        stored = meta(conn)
    finally:
        conn.close()
    asked = {"items_per_participant": items_per_participant, "attention_checks": attention_checks, "seed": seed}
    have = {k: stored["settings"].get(k) for k in asked}
    if have != asked:
        raise ValueError(f"{path} holds a study made with {have}, not {asked}: serve it with those settings "
                         f"(--items {have['items_per_participant']} --attention {have['attention_checks']} --seed "
                         f"{have['seed']}), or start a new study by moving {path} (and its -wal/-shm files) aside")
    return stored
