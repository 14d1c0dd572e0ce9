"""advkit's statistics come from scipy and keep the values the hand-written code gave (issue 24).

The literal numbers below were computed with the hand-written code (integer binomial tail, incomplete beta by
continued fraction, quantiles by bisection) before it was replaced; the scipy versions must agree to 1e-12.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

import advkit.evaluate.metrics as metrics_module
import advkit.evaluate.stats as stats_module
from advkit.evaluate.stats import (
    mcnemar,
    mcnemar_chi2,
    mcnemar_exact,
    summarize_seeds,
    t_cdf,
    t_quantile,
    wilson_interval,
)

# --- values of the hand-written code (advkit before issue 24) -------------------------------------------------

EXACT = {
    (1, 9): 0.021484375,
    (3, 12): 0.03515625,
    (0, 6): 0.03125,
    (7, 7): 1.0,
    (27, 39): 0.1752857944430353,
    (41, 43): 0.9132023622245966,
    (42, 59): 0.11091834966064046,
    (14, 0): 0.0001220703125,
    (120, 95): 0.10145232764870644,
    (400, 350): 0.07350777405843545,
    (2000, 2100): 0.12206497999113813,
    (10, 300): 1.9342365111897645e-75,
}
CHI2 = {
    (1, 9, True): (4.9, 0.026856695507524425),
    (1, 9, False): (6.4, 0.011412036386001656),
    (3, 12, True): (4.266666666666667, 0.03886710381241724),
    (3, 12, False): (5.4, 0.02013675155034634),
    (0, 6, True): (4.166666666666667, 0.041226833337163676),
    (0, 6, False): (6.0, 0.014305878435429647),
    (7, 7, True): (0.0, 1.0),
    (7, 7, False): (0.0, 1.0),
    (27, 39, True): (1.8333333333333333, 0.17573433564422514),
    (27, 39, False): (2.1818181818181817, 0.13964939861042938),
    (41, 43, True): (0.011904761904761904, 0.9131160800723744),
    (41, 43, False): (0.047619047619047616, 0.8272593465627114),
    (42, 59, True): (2.5346534653465347, 0.11137133501896587),
    (42, 59, False): (2.8613861386138613, 0.09072928358419051),
    (14, 0, True): (12.071428571428571, 0.0005120045221899043),
    (14, 0, False): (14.0, 0.0001828106329818349),
    (120, 95, True): (2.6790697674418604, 0.10167510531668544),
    (120, 95, False): (2.9069767441860463, 0.08819706372886547),
    (400, 350, True): (3.2013333333333334, 0.0735782616358548),
    (400, 350, False): (3.3333333333333335, 0.06788915486182903),
    (2000, 2100, True): (2.390487804878049, 0.1220755308503236),
    (2000, 2100, False): (2.4390243902439024, 0.11834981273562832),
    (10, 300, True): (269.4225806451613, 1.5161974911250627e-60),
    (10, 300, False): (271.2903225806452, 5.9387016593032624e-61),
}
T_QUANTILE = {
    (0.975, 1): 12.706204736174659,
    (0.975, 2): 4.302652729749456,
    (0.975, 4): 2.7764451051977908,
    (0.975, 9): 2.2621571627982027,
    (0.975, 29): 2.0452296421327016,
    (0.95, 3): 2.353363434801821,
    (0.995, 5): 4.0321429835552145,
    (0.025, 4): -2.7764451051977943,
    (0.9, 100): 1.2900747613465762,
    (0.999, 1): 318.3088389855325,
}
T_CDF = {
    (0.0, 3): 0.5,
    (1.0, 1): 0.7499999999999998,
    (2.776445, 4): 0.9749999973089543,
    (-1.5, 7): 0.08864924349498504,
    (3.2, 30): 0.9983806991440235,
    (0.3, 2.5): 0.6063288142524013,
}
WILSON = {
    (8, 10, 0.95): (0.49016247153664183, 0.9433178485456247),
    (0, 10, 0.95): (2.7755575615628914e-17, 0.27753279986288915),
    (10, 10, 0.95): (0.7224672001371109, 1.0),
    (40, 300, 0.95): (0.09946641683411198, 0.1764717620638884),
    (37, 300, 0.9): (0.0954314719112919, 0.15796839179397132),
    (150, 300, 0.99): (0.4264510808617547, 0.5735489191382452),
    (1, 1, 0.95): (0.20654931437723745, 1.0),
    (999, 1000, 0.95): (0.9943574414020421, 0.9998234536293739),
    (13, 27, 0.5): (0.41746893569601756, 0.5461077419335139),
}
SEEDS = {
    (0.5, 0.6, 0.7): (0.6, 0.09999999999999998, 0.3515862288249674, 0.8484137711750326),
    (0.4, 0.45, 0.5, 0.55, 0.6): (0.5, 0.07905694150420947, 0.40183784192612226, 0.5981621580738777),
    (0.1325, 0.14): (0.13625, 0.005303300858899111, 0.088601732239345, 0.18389826776065502),
    (0.91, 0.88, 0.93, 0.87): (0.8975, 0.027537852736430536, 0.8536811311517499, 0.94131886884825),
}


@pytest.mark.parametrize(("b", "c"), list(EXACT))
def test_exact_mcnemar_keeps_the_old_values_and_is_scipys_binomial_test(b, c):
    p = mcnemar_exact(b, c)
    assert p == pytest.approx(EXACT[(b, c)], rel=1e-12, abs=1e-300)
    assert p == stats.binomtest(b, b + c, 0.5).pvalue


@pytest.mark.parametrize(("b", "c", "correction"), list(CHI2))
def test_chi2_mcnemar_keeps_the_old_values_and_is_scipys_chi2(b, c, correction):
    stat, p = mcnemar_chi2(b, c, correction=correction)
    old_stat, old_p = CHI2[(b, c, correction)]
    assert stat == old_stat
    assert p == pytest.approx(old_p, rel=1e-12, abs=1e-12)
    assert p == stats.chi2.sf(stat, 1)


def test_mcnemar_record_uses_the_scipy_tests():
    a = torch.tensor([1] * 42 + [0] * 59 + [1] * 10 + [0] * 5, dtype=torch.bool)
    b = torch.tensor([0] * 42 + [1] * 59 + [1] * 10 + [0] * 5, dtype=torch.bool)
    m = mcnemar(a, b)
    assert (m.only_a, m.only_b) == (42, 59)
    assert m.p_exact == stats.binomtest(42, 101, 0.5).pvalue
    assert m.p_exact == pytest.approx(EXACT[(42, 59)], rel=1e-12)
    assert (m.chi2, m.p_chi2) == (CHI2[(42, 59, True)][0], stats.chi2.sf(CHI2[(42, 59, True)][0], 1))


@pytest.mark.parametrize(("q", "df"), list(T_QUANTILE))
def test_t_quantile_keeps_the_old_values_and_is_scipys(q, df):
    assert t_quantile(q, df) == pytest.approx(T_QUANTILE[(q, df)], rel=1e-12)
    assert t_quantile(q, df) == stats.t.ppf(q, df)


@pytest.mark.parametrize(("t", "df"), list(T_CDF))
def test_t_cdf_keeps_the_old_values_and_is_scipys(t, df):
    assert t_cdf(t, df) == pytest.approx(T_CDF[(t, df)], abs=1e-12)
    assert t_cdf(t, df) == stats.t.cdf(t, df)


def test_t_quantile_is_exact_at_the_median_and_symmetric():
    # the bisection gave -8.4e-08 for t_{0.5} with 99 degrees of freedom
    for df in (1, 4, 99):
        assert t_quantile(0.5, df) == 0.0
        assert t_quantile(0.025, df) == pytest.approx(-t_quantile(0.975, df), rel=1e-13)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_quantile(0.975, 0)


@pytest.mark.parametrize(("k", "n", "confidence"), list(WILSON))
def test_wilson_keeps_the_old_values_and_is_scipys(k, n, confidence):
    lo, hi = wilson_interval(k, n, confidence)
    assert (lo, hi) == pytest.approx(WILSON[(k, n, confidence)], abs=1e-12)
    ci = stats.binomtest(k, n).proportion_ci(confidence, method="wilson")
    assert (lo, hi) == (ci.low, ci.high)


@pytest.mark.parametrize("values", list(SEEDS))
def test_seed_summary_keeps_the_old_values(values):
    s = summarize_seeds(values)
    assert (s.mean, s.std, s.low, s.high) == pytest.approx(SEEDS[values], abs=1e-12)
    n = len(values)
    assert s.high - s.mean == pytest.approx(stats.t.ppf(0.975, n - 1) * s.std / math.sqrt(n), rel=1e-12)


def test_the_hand_written_numerics_are_gone():
    for name in ("_betacf", "_betainc"):
        assert not hasattr(stats_module, name), f"advkit.evaluate.stats still defines {name}"
    for name in ("invert_cdf", "_normal_quantile"):
        assert not hasattr(metrics_module, name), f"advkit.evaluate.metrics still defines {name}"
