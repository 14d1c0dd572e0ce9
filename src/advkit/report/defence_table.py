"""The success a defence takes away in a transfer study: undefended minus defended success, per attack.

Transfer papers report every attack against input-transformation defences next to the undefended target (JPEG,
Guo et al., ICLR 2018; feature squeezing, Xu et al., NDSS 2018; random resizing and padding, Xie et al., ICLR 2018).
The transfer matrix already lists each defended target right after its undefended model
(:func:`advkit.study.defended.order_targets`); :func:`defence_table` gives, for each pair, the drop in success the
defence buys, in percentage points (mean over seeds; the seeds share their images, so this is the mean of the
per-seed drops).
"""

from __future__ import annotations

from typing import Any

from advkit.report.html import Table
from advkit.report.tables import _norm_at, budget_label, matrix, row_label, success_name
from advkit.study.defended import order_targets, undefended_of

__all__ = ["defence_pairs", "defence_table"]


def defence_pairs(records: dict[str, Any]) -> list[tuple[str, str]]:
    """``[(undefended, defended)]`` target names, in the matrix's column order, for each defended target whose
    undefended model is a target too."""
    meta = records["meta"]
    targets, models = list(meta["targets"]), meta.get("models") or {}
    pairs = [(undefended_of(t, models), t) for t in order_targets(targets, models)]
    return [(u, t) for u, t in pairs if u is not None and u in targets]


def defence_table(records: dict[str, Any], eps: str, norm: str | None = None, images: str = "float",
                  over: str = "all") -> Table | None:
    """Per attack row, per defended target: the undefended model's success minus the defended one's (points);
    ``None`` when no defended target has its undefended model among the targets."""
    pairs = defence_pairs(records)
    if not pairs:
        return None
    norm = _norm_at(records, eps, norm)
    rows, _, cells = matrix(records, eps, images, over, norm)
    many = len(records["meta"]["sources"]) > 1
    body = []
    for key in rows:
        line = [row_label(key, many)]
        for u, d in pairs:
            a, b = (cells.get((key, c), {}).get("mean") for c in (u, d))
            line.append("-" if a is None or b is None or key[0] in (u, d) else f"{100 * (a - b):+.1f}")
        body.append(line)
    cap = (f"Drop in {success_name(records)} (percentage points) that each defence buys at eps "
           f"{budget_label(eps, norm)}: the undefended target's rate minus the defended target's, on {images} "
           f"examples over {'all attacked images' if over == 'all' else 'images the target classified correctly'}"
           f"; mean over seeds. Positive: the defence stops that many more examples.")
    return Table(["source / attack" if many else "attack", *[f"{d} (vs {u})" for u, d in pairs]], body, cap)
