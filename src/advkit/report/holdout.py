"""The hold-out protocol's table (``holdout: true``; :mod:`advkit.study.ensembles`): each target against the
ensemble of all the other targets, one row per target, with the white-box success on that ensemble beside it."""

from __future__ import annotations

from typing import Any

from advkit.report.gammas import gamma_text
from advkit.report.html import Table
from advkit.report.tables import budget_label, pct, success_name

__all__ = ["holdout_table"]


def holdout_table(records: dict[str, Any], images: str = "float", over: str = "all") -> Table | None:
    """``hold-out ensemble (all but X) -> X`` per target, attack, budget and decay: the mean ± std over seeds of
    the success on ``X`` and on the ensemble itself (white-box); ``None`` for a study without ``holdout``."""
    pairs: dict[str, str] = records["meta"].get("holdout") or {}
    if not pairs:
        return None
    found: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    for r in records["summary"]:
        if r["source"] in pairs and r["images"] == images and r["over"] == over:
            key = (r["source"], r["attack"], r["eps"], r["norm"], r["gamma"])
            found.setdefault(key, {})["wb" if r["white_box"] else r["target"]] = r

    def ms(r: dict[str, Any] | None) -> str:
        if r is None or r["mean"] is None:
            return "-"
        return pct(r["mean"]) + ("" if r["std"] is None else f" ± {pct(r['std'])}")

    order = list(pairs)
    body = [[f"{src} -> {pairs[src]}", atk + gamma_text(g), budget_label(eps, norm), ms(cols.get("wb")),
             ms(cols.get(pairs[src]))]
            for (src, atk, eps, norm, g), cols in sorted(found.items(), key=lambda kv: order.index(kv[0][0]))]
    name = success_name(records)
    return Table(["hold-out ensemble -> target", "attack", "eps", f"white-box {name} (%)",
                  f"{name} on the held-out target (%)"], body,
                 caption="Each target attacked through the ensemble of all the other targets (mean ± std over "
                         "seeds).", align="lllrr")
