"""Statistics for transfer studies: McNemar's paired test, mean and spread over seeds, Student-t intervals.

The distributions come from scipy (the hand-written incomplete beta and bisection they replace agreed with them
to about 1e-12):

* McNemar (1947) compares two attacks on the *same* images through the discordant pairs only: ``b`` images
  fooled by the first attack and not the second, ``c`` the reverse. The exact test is the two-sided binomial
  test of ``b`` out of ``b + c`` at ``p = 1/2`` (``scipy.stats.binomtest``); the asymptotic one is chi-square with
  one degree of freedom on ``(|b - c| - 1)^2 / (b + c)`` (Edwards' continuity correction) or ``(b - c)^2 / (b + c)``.
* Over seeds: the mean, the sample standard deviation (``n - 1`` in the denominator) and the Student-t 95%
  interval of the mean (``scipy.stats.t``).

Binomial proportions use the Wilson interval of :func:`advkit.evaluate.metrics.wilson_interval`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from scipy import stats

from advkit.evaluate.metrics import wilson_interval

__all__ = ["McNemar", "SeedSummary", "mcnemar", "mcnemar_chi2", "mcnemar_exact", "summarize_seeds", "t_cdf",
           "t_quantile", "wilson_interval"]


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of ``b`` successes in ``b + c`` trials at ``p = 1/2``.

    ``min(1, 2 * P[X <= min(b, c)])`` for ``X ~ Binomial(b + c, 1/2)``; ``b + c == 0`` gives 1.0.

    Args:
        b: pairs where the first method succeeded and the second did not.
        c: pairs where the second method succeeded and the first did not.
    """
    _check_counts(b, c)
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(int(b), int(b + c), 0.5).pvalue)


def mcnemar_chi2(b: int, c: int, correction: bool = True) -> tuple[float, float]:
    """McNemar's chi-square statistic and its p-value (one degree of freedom).

    Args:
        b: discordant pairs one way.
        c: discordant pairs the other way.
        correction: Edwards' continuity correction ``(|b - c| - 1)^2 / (b + c)`` (floored at 0).

    Returns:
        ``(statistic, p_value)``; ``(0.0, 1.0)`` when there are no discordant pairs.
    """
    _check_counts(b, c)
    n = b + c
    if n == 0:
        return 0.0, 1.0
    d = abs(b - c)
    if correction:
        d = max(d - 1, 0)
    stat = d * d / n
    return stat, float(stats.chi2.sf(stat, df=1))


def _check_counts(b: int, c: int) -> None:
    if isinstance(b, bool) or isinstance(c, bool) or int(b) != b or int(c) != c or b < 0 or c < 0:
        raise ValueError(f"discordant counts must be integers >= 0, got b={b!r}, c={c!r}")


@dataclass(frozen=True)
class McNemar:
    """A paired comparison of two attacks on the same images.

    Attributes:
        n: images compared.
        a_k: images the first attack succeeded on.
        b_k: images the second (usually the baseline) succeeded on.
        only_a: discordant pairs where only the first succeeded.
        only_b: discordant pairs where only the second succeeded.
        difference: ``(a_k - b_k) / n``, the difference in success rates.
        p_exact: two-sided exact (binomial) p-value.
        chi2: chi-square statistic with continuity correction.
        p_chi2: its p-value.
    """

    n: int
    a_k: int
    b_k: int
    only_a: int
    only_b: int
    difference: float
    p_exact: float
    chi2: float
    p_chi2: float


def mcnemar(a: torch.Tensor, b: torch.Tensor) -> McNemar:
    """McNemar's test between two bool success vectors ``(N,)`` over the same images (first vs second)."""
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two success vectors of the same shape (N,), got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.bool(), b.bool()
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = int(a.numel())
    stat, p = mcnemar_chi2(only_a, only_b, correction=True)
    ak, bk = int(a.sum()), int(b.sum())
    return McNemar(n=n, a_k=ak, b_k=bk, only_a=only_a, only_b=only_b, difference=(ak - bk) / n if n else 0.0,
                   p_exact=mcnemar_exact(only_a, only_b), chi2=stat, p_chi2=p)


# --- Student t ------------------------------------------------------------------------------------------------


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t distribution with ``df`` degrees of freedom (``scipy.stats.t.cdf``)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    return float(stats.t.cdf(t, df))


def t_quantile(q: float, df: float) -> float:
    """Quantile of Student's t (``scipy.stats.t.ppf``); ``t_quantile(0.975, 4) = 2.7764...``."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q}")
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    return float(stats.t.ppf(q, df))


@dataclass(frozen=True)
class SeedSummary:
    """Mean and spread of one quantity over seeds.

    Attributes:
        n: number of seeds.
        mean: arithmetic mean.
        std: sample standard deviation (``n - 1`` denominator); ``None`` for a single seed.
        low: lower end of the Student-t 95% interval of the mean; ``None`` for a single seed.
        high: upper end; ``None`` for a single seed.
    """

    n: int
    mean: float
    std: float | None
    low: float | None
    high: float | None


def summarize_seeds(values: Sequence[float], confidence: float = 0.95) -> SeedSummary:
    """Mean, sample standard deviation and Student-t interval of ``values`` (one per seed)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("need at least one value to summarise")
    n = len(vals)
    mean = math.fsum(vals) / n
    if n == 1:
        return SeedSummary(1, mean, None, None, None)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return SeedSummary(n, mean, std, mean - half, mean + half)
