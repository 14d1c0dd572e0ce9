"""Human perception of JSMA's examples, by proxy: how close is an adversarial image to the clean training images of
its source class, and of its target class?

The JSMA paper asked people whether its examples still looked like their source digit. Without people,
:func:`perception_study` measures, for every successful example of a finished ``advkit reproduce jsma`` run, the
L2 distance (pixels in ``[0, 1]``) to the nearest clean *training* image of the source class and to the nearest of
the target class: an example nearer its target class than its source class has, to a nearest-neighbour reader,
become the target. Per (source, target) pair it reports both mean distances, the share of examples nearer the
target class, and the clean images' own distance to their nearest other training image of their class (the scale
a distance should be read against). When the attacked rows are reference rows (the training set of the paper's
protocol), each example's own clean original is skipped, so that "nearest" means another image; exact copies
(distance 0) are skipped too.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from advkit.data import load as load_data
from advkit.progress import ProgressFn, report
from advkit.study.runkind import JSMA, describe_run

__all__ = ["PerceptionStudy", "check_jsma_run", "jsma_examples", "nearest_distance", "perception_study"]


def check_jsma_run(run_dir: str | Path) -> None:
    """``ValueError`` saying what ``run_dir`` is (missing, a transfer run, an unfinished run...) unless it is a
    finished ``advkit reproduce jsma`` run."""
    what = describe_run(run_dir)
    if not what.endswith(JSMA):
        raise ValueError(f"{what}, not a finished `advkit reproduce jsma` run; give the --out folder of one")


def jsma_examples(run_dir: str | Path) -> dict[str, Any]:
    """The successful examples of a finished JSMA run (a single split, or each set of a pooled run): ``x_adv``
    float ``(N, C, H, W)``, ``x`` (the clean images), ``source``, ``target``, ``share`` (features modified), and
    the ``dataset`` and ``splits`` they came from.

    Raises:
        ValueError: not a finished JSMA run, or one written before examples were kept (rerun it).
    """
    root = Path(run_dir)
    check_jsma_run(root)
    payload = json.loads((root / "results.json").read_text())
    folders = [root / s["folder"] for s in payload["sets"]] if "sets" in payload else [root]
    parts: dict[str, list[Any]] = {k: [] for k in ("x_adv", "x", "source", "target", "share", "row", "base")}
    dataset, splits = None, []
    for folder in folders:
        summary = json.loads((folder / "results.json").read_text())["summary"]
        if not (folder / "adversarial.safetensors").is_file():
            raise ValueError(f"{folder}: the run kept no examples (adversarial.safetensors); it was written by an "
                             f"older advkit: rerun `advkit reproduce jsma`")
        t = load_file(str(folder / "adversarial.safetensors"))
        with (folder / "records.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        ok = np.array([r["success"] == "True" for r in rows])
        dataset = summary["dataset"]
        split = summary.get("split") or "test"
        splits.append(split)
        clean = load_data(dataset, split.split("[")[0])  # record indices are rows of the whole split
        index = t["index"].numpy()[ok]
        parts["x_adv"].append(t["x_adv"][torch.from_numpy(ok)].float() / 255.0)
        parts["x"].append(clean.x[torch.from_numpy(index)])
        parts["source"].append(np.array([int(r["source"]) for r in rows])[ok])
        parts["target"].append(t["target"].numpy()[ok])
        parts["share"].append(np.array([float(r["share"]) for r in rows])[ok])
        parts["row"].append(index)
        parts["base"] += [split.split("[")[0]] * int(ok.sum())
    return {"x_adv": torch.cat(parts["x_adv"]), "x": torch.cat(parts["x"]),
            "source": np.concatenate(parts["source"]), "target": np.concatenate(parts["target"]),
            "share": np.concatenate(parts["share"]), "dataset": dataset, "splits": splits,
            "row": np.concatenate(parts["row"]), "base": np.array(parts["base"]),
            "folders": [str(f) for f in folders]}


def nearest_distance(queries: torch.Tensor, references: torch.Tensor, chunk: int = 2048,
                     exclude: torch.Tensor | None = None) -> torch.Tensor:
    """For each query, the L2 distance to its nearest reference, skipping exact copies (distance 0) and, where
    ``exclude[i] >= 0``, reference ``exclude[i]`` (query ``i``'s own clean original)."""
    q = queries.flatten(1).float()
    r = references.flatten(1).float()
    out = torch.empty(q.shape[0])
    for i in range(0, q.shape[0], chunk):
        d = torch.cdist(q[i:i + chunk], r)
        d = torch.where(d <= 1e-6, torch.full_like(d, float("inf")), d)
        if exclude is not None:
            own = exclude[i:i + chunk]
            hit = (own >= 0).nonzero().flatten()
            d[hit, own[hit]] = float("inf")
        out[i:i + chunk] = d.min(dim=1).values
    return out


@dataclass
class PerceptionStudy:
    """Per-example distances and per-pair tables (``(K, K)``, NaN on the diagonal and where nothing succeeded)."""

    d_source: np.ndarray
    d_target: np.ndarray
    d_clean: np.ndarray
    source: np.ndarray
    target: np.ndarray
    nearer_target: np.ndarray
    mean_d_source: np.ndarray
    mean_d_target: np.ndarray
    count: np.ndarray
    classes: tuple[str, ...]
    summary: dict[str, Any]
    x: torch.Tensor = field(repr=False)
    x_adv: torch.Tensor = field(repr=False)

    def pair_rows(self) -> list[dict[str, Any]]:
        k = len(self.classes)
        nan = lambda v: None if not np.isfinite(v) else float(v)  # noqa: E731
        return [{"source": s, "target": t, "examples": int(self.count[s, t]),
                 "mean_distance_source": nan(self.mean_d_source[s, t]),
                 "mean_distance_target": nan(self.mean_d_target[s, t]),
                 "share_nearer_target": nan(self.nearer_target[s, t])} for s in range(k) for t in range(k) if s != t]


def perception_study(run_dir: str | Path, train_split: str = "train",
                     progress: ProgressFn | None = None) -> PerceptionStudy:
    """Distances from every successful example of the JSMA run in ``run_dir`` to the nearest clean images of
    ``train_split`` (the attacked model's training rows, e.g. ``train[:50000]``) of its source and target classes
    (``progress``: stage ``"classes"``, one step per class)."""
    ex = jsma_examples(run_dir)
    ref = load_data(ex["dataset"], train_split)
    ref_base = train_split.split("[")[0]
    classes = tuple(ref.classes)
    k = len(classes)
    n = ex["x_adv"].shape[0]
    d_src, d_tgt, d_clean = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    for c in range(k):
        report(progress, "classes", c, k, classes[c])
        members = (ref.y == c).nonzero().flatten()
        refs = ref.x[members]
        as_src = np.flatnonzero(ex["source"] == c)
        as_tgt = np.flatnonzero(ex["target"] == c)
        if as_src.size:
            # an attacked training row's own original is in the reference: skip it (it is not "another" image)
            member_rows = (ref.indices[members] if ref.indices is not None else members).numpy()
            pos = {int(r): k for k, r in enumerate(member_rows)}
            own = torch.tensor([pos.get(int(r), -1) if b == ref_base else -1
                                for r, b in zip(ex["row"][as_src], ex["base"][as_src], strict=True)])
            d_src[as_src] = nearest_distance(ex["x_adv"][as_src], refs, exclude=own).numpy()
            d_clean[as_src] = nearest_distance(ex["x"][as_src], refs, exclude=own).numpy()
        if as_tgt.size:
            d_tgt[as_tgt] = nearest_distance(ex["x_adv"][as_tgt], refs).numpy()
    report(progress, "classes", k, k)
    nearer = d_tgt < d_src
    count = np.zeros((k, k), dtype=np.int64)
    sums = {name: np.zeros((k, k)) for name in ("src", "tgt", "near")}
    np.add.at(count, (ex["source"], ex["target"]), 1)
    np.add.at(sums["src"], (ex["source"], ex["target"]), d_src)
    np.add.at(sums["tgt"], (ex["source"], ex["target"]), d_tgt)
    np.add.at(sums["near"], (ex["source"], ex["target"]), nearer)
    with np.errstate(invalid="ignore", divide="ignore"):
        tables = {name: np.where(count > 0, v / count, np.nan) for name, v in sums.items()}
    summary = {"dataset": ex["dataset"], "splits": ex["splits"], "folders": ex["folders"], "reference": ref.split,
               "reference_images": len(ref),
               "examples": int(n), "share_nearer_target": float(nearer.mean()) if n else float("nan"),
               "mean_distance_source": float(np.mean(d_src)) if n else float("nan"),
               "mean_distance_target": float(np.mean(d_tgt)) if n else float("nan"),
               "mean_distance_clean": float(np.mean(d_clean)) if n else float("nan"),
               "metric": "L2 in [0, 1] pixels to the nearest clean reference image of the class (copies skipped)"}
    return PerceptionStudy(d_src, d_tgt, d_clean, ex["source"], ex["target"], tables["near"], tables["src"],
                           tables["tgt"], count, classes, summary, ex["x"], ex["x_adv"])
