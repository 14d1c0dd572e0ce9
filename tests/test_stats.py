"""The transfer study's statistics against values computed by hand (formulas in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from advkit.evaluate.stats import (
    mcnemar,
    mcnemar_chi2,
    mcnemar_exact,
    summarize_seeds,
    t_cdf,
    t_quantile,
    wilson_interval,
)


def test_wilson_8_of_10():
    # p = 0.8, z = 1.959964: centre (0.8 + z^2/20) / (1 + z^2/10) = 0.716741,
    # half z * sqrt(0.016 + z^2/400) / (1 + z^2/10) = 0.226575
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.490162, abs=1e-6)
    assert hi == pytest.approx(0.943318, abs=1e-6)


def test_wilson_edges():
    # k = 0: the interval is [0, z^2 / (n + z^2)] = [0, 3.841459 / 13.841459]
    lo, hi = wilson_interval(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(3.841459 / 13.841459, abs=1e-6)
    lo, hi = wilson_interval(10, 10)
    assert hi == pytest.approx(1.0, abs=1e-12) and lo == pytest.approx(10 / 13.841459, abs=1e-6)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_mcnemar_exact_small():
    # b=1, c=9: 2 * (C(10,0) + C(10,1)) / 2^10 = 22 / 1024
    assert mcnemar_exact(1, 9) == 22 / 1024
    assert mcnemar_exact(9, 1) == 22 / 1024
    # b=0, c=6: 2 / 64
    assert mcnemar_exact(0, 6) == 2 / 64
    # b = c: the doubled tail exceeds 1 and is capped
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    # b=3, c=12: 2 * (1 + 15 + 105 + 455) / 2^15 = 1152 / 32768
    assert mcnemar_exact(3, 12) == pytest.approx(1152 / 32768, rel=1e-15)


def test_mcnemar_exact_large_counts_do_not_underflow():
    p = mcnemar_exact(2000, 2100)
    assert 0.10 < p < 0.14  # normal approximation: z = 99/sqrt(4100) = 1.546 -> p ~ 0.122
    assert 0.0 <= mcnemar_exact(0, 3000) < 1e-300  # 2 / 2^3000 underflows to 0 without an error
    assert mcnemar_exact(2500, 2500) == 1.0


def test_mcnemar_chi2_with_and_without_continuity_correction():
    # b=1, c=9: corrected (|1-9| - 1)^2 / 10 = 4.9, p = P[chi2_1 > 4.9] = erfc(sqrt(2.45)) = 0.0268567
    stat, p = mcnemar_chi2(1, 9)
    assert stat == pytest.approx(4.9)
    assert p == pytest.approx(0.0268566955, abs=1e-9)
    # uncorrected (1 - 9)^2 / 10 = 6.4, p = 0.0114120
    stat, p = mcnemar_chi2(1, 9, correction=False)
    assert stat == pytest.approx(6.4)
    assert p == pytest.approx(0.0114120364, abs=1e-9)
    # b = c: statistic 0 (the corrected |b - c| - 1 is floored at 0), p = 1
    assert mcnemar_chi2(4, 4) == (0.0, 1.0)
    assert mcnemar_chi2(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        mcnemar_chi2(-1, 2)


def test_mcnemar_on_success_vectors():
    a = torch.tensor([1, 1, 1, 1, 0, 0, 1, 0], dtype=torch.bool)
    b = torch.tensor([1, 0, 0, 0, 0, 1, 1, 0], dtype=torch.bool)
    m = mcnemar(a, b)
    # discordant: a only at 1, 2, 3 (3); b only at 5 (1); exact p = 2 * (1 + 4) / 16 = 0.625
    assert (m.n, m.a_k, m.b_k, m.only_a, m.only_b) == (8, 5, 3, 3, 1)
    assert m.difference == pytest.approx(2 / 8)
    assert m.p_exact == pytest.approx(0.625)
    assert m.chi2 == pytest.approx(0.25)  # (|3 - 1| - 1)^2 / 4
    with pytest.raises(ValueError):
        mcnemar(a, b[:4])


def test_t_quantiles():
    # tables: t_{0.975} with 1, 2, 4, 30 degrees of freedom
    assert t_quantile(0.975, 1) == pytest.approx(12.706205, abs=1e-5)
    assert t_quantile(0.975, 2) == pytest.approx(4.302653, abs=1e-5)
    assert t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-5)
    assert t_quantile(0.975, 30) == pytest.approx(2.042272, abs=1e-5)
    assert t_cdf(0.0, 3) == pytest.approx(0.5)
    # df = 1 is Cauchy: F(1) = 3/4
    assert t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-12)


def test_summarize_seeds():
    # 0.5, 0.6, 0.7: mean 0.6, std sqrt((0.01 + 0 + 0.01) / 2) = 0.1, half 4.302653 * 0.1 / sqrt(3) = 0.248414
    s = summarize_seeds([0.5, 0.6, 0.7])
    assert s.n == 3 and s.mean == pytest.approx(0.6) and s.std == pytest.approx(0.1)
    assert s.low == pytest.approx(0.6 - 0.2484138, abs=1e-6)
    assert s.high == pytest.approx(0.6 + 0.2484138, abs=1e-6)
    # five seeds: 0.40 0.45 0.50 0.55 0.60 -> mean 0.5, std sqrt(0.025 / 4) = 0.0790569
    s = summarize_seeds([0.40, 0.45, 0.50, 0.55, 0.60])
    assert s.std == pytest.approx(math.sqrt(0.00625))
    assert s.high - s.mean == pytest.approx(2.776445 * math.sqrt(0.00625) / math.sqrt(5), abs=1e-6)
    one = summarize_seeds([0.3])
    assert (one.n, one.mean, one.std, one.low, one.high) == (1, 0.3, None, None, None)
    with pytest.raises(ValueError):
        summarize_seeds([])
