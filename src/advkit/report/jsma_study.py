"""The files of ``advkit reproduce jsma``: ``results.json``, ``records.csv``, ``pairs.csv``, the success and
distortion heatmaps by (source class, target class), and ``summary.md``, written atomically. The measurement is
:func:`advkit.evaluate.jsma_study.reproduce_jsma`."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from advkit.evaluate.jsma_study import PAPER, JSMAStudy, finite_or_none


def study_markdown(study: JSMAStudy) -> str:
    """A markdown summary: the headline next to the paper's, then both class-pair tables."""
    s = study.summary
    lo, hi = s["success_ci95"]
    lines = [
        f"# JSMA reproduction: {s['model']} on {s['dataset']}", "",
        f"{s['n_samples']} test samples x {len(study.classes) - 1} targets = {s['n_attacks']} targeted attacks "
        f"({s['attack']}).", "",
        "| metric | advkit | paper |", "| --- | --- | --- |",
        f"| success rate (all attacks) | {100 * s['success_rate']:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}] | "
        f"{100 * PAPER['success_rate']:.0f}% |",
        f"| success rate (clean-correct samples) | {100 * s['success_rate_clean_correct']:.2f}% | - |",
        f"| success rate after rounding to 8 bits | {100 * s['success_rate_8bit']:.2f}% | - |",
        f"| features modified, mean over successful attacks | {100 * s['distortion_successful']:.2f}% | "
        f"{100 * PAPER['distortion']:.2f}% |",
        f"| features modified, mean over all attacks | {100 * s['distortion_all']:.2f}% | - |",
        f"| time per targeted attack | {1000 * s['seconds_per_attack']:.1f} ms | - |",
        f"| time per sample (all {len(study.classes) - 1} targets) | {s['seconds_per_sample']:.3f} s | - |", "",
        f"Clean accuracy on these samples: {100 * s['clean_accuracy']:.2f}%. "
        f"Success over all attacks counts every (sample, target) row, as the paper does; the 95% interval is "
        f"Wilson's. Paper: {PAPER['source']}.",
    ]
    if s.get("note"):
        lines += ["", f"Data: {s['note']}."]
    for title, table, scale in (("Success rate (%)", study.success, 100), ("Mean distortion over successful "
                                "attacks (% of features)", study.distortion, 100)):
        lines += ["", f"## {title}: rows = source class, columns = target class", "",
                  "| source \\ target | " + " | ".join(study.classes) + " |",
                  "| --- " * (len(study.classes) + 1) + "|"]
        for i, name in enumerate(study.classes):
            cells = ["-" if not np.isfinite(v) else f"{scale * v:.1f}" for v in table[i]]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"




def _jsonable(obj: Any) -> Any:
    """NaN and infinities become ``None`` (JSON has no NaN); tuples become lists."""
    if isinstance(obj, float):
        return finite_or_none(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def heatmap_png(values: np.ndarray, classes: tuple[str, ...], title: str, label: str, vmax: float) -> bytes:
    """A (source x target) heatmap as PNG bytes (matplotlib, Agg backend), cells annotated in percent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    im = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0, vmax=vmax)
    ax.set_xticks(range(len(classes)), labels=list(classes))
    ax.set_yticks(range(len(classes)), labels=list(classes))
    ax.set_xlabel("target class")
    ax.set_ylabel("source class")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{100 * values[i, j]:.0f}" if vmax >= 0.5 else f"{100 * values[i, j]:.1f}",
                        ha="center", va="center", fontsize=7, color="white" if values[i, j] < vmax / 2 else "black")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=label)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


def save_study(study: JSMAStudy, out_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the study to ``out_dir`` atomically: all files go to a hidden sibling folder that is renamed into
    place at the end, so ``out_dir`` either holds a complete result or does not exist.

    Files: ``results.json`` (summary, tables, ``extra``), ``records.csv``, ``pairs.csv``,
    ``success_heatmap.png``, ``distortion_heatmap.png``, ``summary.md``.

    Raises:
        FileExistsError: ``out_dir`` exists and is not empty (finished work is never overwritten).
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not empty; choose another output folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        s = study.summary
        payload = _jsonable({"summary": s, "classes": list(study.classes), "success": study.success.tolist(),
                             "distortion": study.distortion.tolist(), "attempts": study.attempts.tolist(),
                             "extra": extra or {}})
        (tmp / "results.json").write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
        (tmp / "records.csv").write_text(_csv(study.records))
        (tmp / "pairs.csv").write_text(_csv(study.pair_records()))
        finite = study.distortion[np.isfinite(study.distortion)]
        vmax = float(max(0.01, finite.max())) if finite.size else 0.15
        (tmp / "success_heatmap.png").write_bytes(heatmap_png(
            study.success, study.classes, f"JSMA success rate ({s['model']}, {s['dataset']})", "success rate", 1.0))
        (tmp / "distortion_heatmap.png").write_bytes(heatmap_png(
            study.distortion, study.classes, "JSMA mean share of features modified (successful attacks)",
            "share of features", vmax))
        md = study_markdown(study)
        if extra:
            md += "\n## Extra\n\n```json\n" + json.dumps(_jsonable(extra), indent=2) + "\n```\n"
        (tmp / "summary.md").write_text(md)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
