"""The files of ``advkit analyze perception``: ``results.json``, ``pairs.csv``, the heatmap of the share of
examples nearer their target class, a grid of the hardest and easiest pairs' examples, and ``report.md``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from advkit._files import atomic_write_bytes, atomic_write_text, csv_text
from advkit.analysis.perception import PerceptionStudy
from advkit.report.figures import heatmap, perturbation_gallery
from advkit.report.provenance import manifest

__all__ = ["write_perception_report"]


def _extremes(p: PerceptionStudy, n: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The ``n`` pairs whose examples stay nearest their source class (hardest to see as the target) and the
    ``n`` nearest their target class (easiest), among pairs with examples."""
    k = len(p.classes)
    pairs = [(s, t) for s in range(k) for t in range(k) if s != t and p.count[s, t] > 0]
    by = sorted(pairs, key=lambda st: (p.nearer_target[st], p.mean_d_source[st] - p.mean_d_target[st]))
    return by[:n], by[::-1][:n]


def _grid(p: PerceptionStudy, pairs: list[tuple[int, int]], tag: str, per_pair: int = 4) -> list[tuple[str, list]]:
    rows = []
    for s, t in pairs:
        idx = np.flatnonzero((p.source == s) & (p.target == t))[:per_pair]
        rows.append((f"image: {p.classes[s]} -> {p.classes[t]} ({tag}, {100 * p.nearer_target[s, t]:.0f}% nearer "
                     f"target)", [img for i in idx for img in (p.x[i], p.x_adv[i])]))
    return rows


def perception_markdown(p: PerceptionStudy, hard: list[tuple[int, int]], easy: list[tuple[int, int]],
                        command: str) -> str:
    s = p.summary
    lines = [f"# Perception proxy for JSMA's examples ({s['dataset']}: {', '.join(s['splits'])})", "",
             f"{s['examples']} successful examples. For each, the L2 distance (pixels in [0, 1]) to the nearest clean "
             f"image of its source class and of its target class among the {s['reference_images']} images of "
             f"`{s['reference']}` (exact copies skipped). An example nearer its target class has, to a "
             f"nearest-neighbour reader, become the target.", "",
             "| measure | value |", "|---|---|",
             f"| examples nearer their target class than their source class | {100 * s['share_nearer_target']:.2f}% |",
             f"| mean distance to the nearest source-class image | {s['mean_distance_source']:.3f} |",
             f"| mean distance to the nearest target-class image | {s['mean_distance_target']:.3f} |",
             f"| the clean images' distance to their nearest other source-class image | "
             f"{s['mean_distance_clean']:.3f} |", "",
             "![share nearer the target class](nearer_target_heatmap.png)", "",
             "![distance to the source class over distance to the target class](distance_ratio_heatmap.png)", "",
             "## Per pair", "", "| source | target | examples | to source class | to target class | nearer target |",
             "|---|---|---|---|---|---|"]
    for r in p.pair_rows():
        if r["examples"]:
            lines.append(f"| {p.classes[r['source']]} | {p.classes[r['target']]} | {r['examples']} | "
                         f"{r['mean_distance_source']:.3f} | {r['mean_distance_target']:.3f} | "
                         f"{100 * r['share_nearer_target']:.1f}% |")
    names = lambda ps: ", ".join(f"{p.classes[a]}->{p.classes[b]}" for a, b in ps)  # noqa: E731
    lines += ["", f"Hardest pairs to see as the target (examples stay nearest their source class): {names(hard)}; "
              f"easiest: {names(easy)}. Their examples (clean, adversarial) are in `extremes.png`.", "",
              f"Command: `{command}`", ""]
    return "\n".join(lines)


def write_perception_report(p: PerceptionStudy, out: str | Path, *, command: str = "",
                            extremes: int = 3) -> dict[str, Path]:
    """Write the study to ``out``; returns the paths by kind."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hard, easy = _extremes(p, extremes)
    paths = {"json": out / "results.json", "csv": out / "pairs.csv", "heatmap": out / "nearer_target_heatmap.png",
             "ratio": out / "distance_ratio_heatmap.png",
             "grid": out / "extremes.png", "markdown": out / "report.md"}
    payload: dict[str, Any] = {"summary": p.summary, "classes": list(p.classes), "pairs": p.pair_rows(),
                               "hardest": [list(x) for x in hard], "easiest": [list(x) for x in easy],
                               "command": command, "provenance": manifest(command, {"extremes": extremes}, {
                                   f"set{i}": Path(f) / "adversarial.safetensors"
                                   for i, f in enumerate(p.summary.get("folders", []))})}
    atomic_write_text(paths["json"], json.dumps(payload, indent=2) + "\n")
    atomic_write_text(paths["csv"], csv_text(p.pair_rows()))
    axes = ("source class", "target class")
    atomic_write_bytes(paths["heatmap"], heatmap(p.nearer_target, list(p.classes), list(p.classes),
                                                 "JSMA examples nearer their target class (%)",
                                                 label="share nearer the target class", axes=axes))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.minimum(p.mean_d_source / p.mean_d_target, 1.0)
    atomic_write_bytes(paths["ratio"], heatmap(ratio, list(p.classes), list(p.classes),
                                               "distance to the source class / to the target class (%)",
                                               label="100 = halfway (capped)", axes=axes))
    rows = _grid(p, hard, "hard") + _grid(p, easy, "easy")
    columns = [c for _ in range(4) for c in ("clean", "adversarial")]
    atomic_write_bytes(paths["grid"], perturbation_gallery(rows, columns, 1.0, "hardest and easiest pairs"))
    atomic_write_text(paths["markdown"], perception_markdown(p, hard, easy, command))
    return paths
