"""Query statistics of a black-box attack: what the queries it spent per image say about its cost.

Reported the way the query-attack papers report them: mean and median queries over the images the attack
fooled, the mean over all attacked images (what a run costs), and the share of images fooled within 100, 1,000
and the whole budget, each with its Wilson interval.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from advkit.evaluate.metrics import rate

__all__ = ["query_stats"]

MARKS = (100, 1000)


def query_stats(queries: torch.Tensor, success: torch.Tensor, budget: int) -> dict[str, Any]:
    """Summarise per-image query counts.

    Args:
        queries: int64 ``(N,)`` queries spent on each image (``AttackResult.queries``).
        success: bool ``(N,)`` the attack fooled the image.
        budget: the per-image query budget the attack ran under.

    Returns:
        ``n``, ``budget``, ``success`` (a rate), ``mean_queries_success`` and ``median_queries_success`` (NaN when
        nothing succeeded), ``mean_queries_all``, and ``within``: ``{"100": rate, "1000": rate, "budget": rate}``
        (the share of all ``N`` images fooled within that many queries; marks above the budget are left out).
    """
    if queries.shape != success.shape:
        raise ValueError(f"queries {tuple(queries.shape)} and success {tuple(success.shape)} must match")
    q = queries.double().cpu()
    ok = success.bool().cpu()
    won = q[ok]
    within: dict[str, Any] = {}
    for mark in MARKS:
        if mark <= budget:
            within[str(mark)] = rate(ok & (q <= mark)).__dict__
    within["budget"] = rate(ok & (q <= budget)).__dict__
    return {
        "n": int(q.numel()), "budget": int(budget), "success": rate(ok).__dict__,
        "mean_queries_success": float(won.mean()) if won.numel() else math.nan,
        "median_queries_success": float(won.quantile(0.5)) if won.numel() else math.nan,
        "mean_queries_all": float(q.mean()) if q.numel() else math.nan,
        "within": within,
    }
