"""Tests that kill the surviving mutants of the mutation run on evaluate/ (benchmarks/results/mutation_issue23.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from advkit.evaluate.metrics import wilson_interval
from advkit.evaluate.quantize import quantize


# ============================================================== mutation run: survivors in evaluate/ (group 3)
def test_quantize_defaults_to_an_linf_budget_and_clips_to_pixels():
    x = torch.tensor([100.0, 100.0, 0.0, 255.0]).view(1, 1, 1, 4) / 255
    x_adv = torch.tensor([120 / 255, 0.3, -0.2, 1.3]).view(1, 1, 1, 4)
    q = quantize(x_adv, x, 9.99 / 255)  # norm defaults to linf; 9.99 levels allow 9 whole levels
    assert torch.round(q * 255).flatten().tolist() == [109, 91, 0, 255]
    assert torch.round(quantize(x_adv, x) * 255).flatten().tolist() == [120, 76, 0, 255]  # in [0, 1] without eps


def _largest_l2_rounding(delta: torch.Tensor, radius: float, grid: int = 20001) -> torch.Tensor:
    """For each row of 8-bit perturbations, the largest norm of round(t * delta) within ``radius`` over a grid
    of t in [0, 1] (the norm is non-decreasing in t, so this lower-bounds the exact supremum)."""
    ts = torch.linspace(0, 1, grid, dtype=torch.float64)
    norms = torch.stack([torch.round(t * delta.double()).norm(dim=1) for t in ts])  # (grid, N)
    return norms.masked_fill(norms > radius + 1e-6, -1.0).amax(0)


def test_quantize_l2_keeps_the_largest_rounded_perturbation_within_the_radius():
    """An image that rounding pushes past its L2 radius gets the largest 8-bit perturbation along its direction
    that is within it (not just any perturbation within it), each image on its own."""
    g = torch.Generator().manual_seed(1)
    n, eps = 40, 0.5
    x = torch.full((n, 1, 10, 10), 128 / 255)
    d = torch.zeros(n, 100)
    d[:, :30] = torch.rand(n, 30, generator=g) * 4 + 1  # 30 pixels of 1 to 5 levels, random signs
    d[:, :30] *= torch.where(torch.rand(n, 30, generator=g) < 0.5, -1.0, 1.0)
    d = d / d.norm(dim=1, keepdim=True) * eps
    x_adv = x + d.view(n, 1, 10, 10)
    q = quantize(x_adv, x, eps, "l2")
    got = torch.round((q - x) * 255).flatten(1).norm(dim=1).double()
    naive = torch.round((x_adv - x) * 255).flatten(1)
    over = naive.norm(dim=1) > eps * 255 + 1e-6
    assert int(over.sum()) >= 3
    assert bool((got <= eps * 255 + 1e-4).all())
    best = _largest_l2_rounding(naive[over], eps * 255)
    assert bool((got[over] >= best - 1e-3).all()), (got[over], best)  # float32 norms; one level moves it > 4e-3


@pytest.mark.parametrize("k, n", [(9, 9), (26, 26), (0, 21), (0, 36)])
def test_wilson_interval_stays_in_the_unit_interval(k, n):
    """At k = n (k = 0) the upper (lower) end computes to 1 + 2e-16 (-1e-17) in floating point: clipped."""
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= hi <= 1.0


def test_wilson_interval_refuses_bad_counts_and_levels():
    for k, n in ((11, 10), (-1, 5), (0, -1)):
        with pytest.raises(ValueError, match="need 0 <= successes <= n"):
            wilson_interval(k, n)
    for c in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\)"):
            wilson_interval(1, 2, c)


def test_rate_holds_its_counts_and_interval_at_the_asked_level():
    from advkit.evaluate.metrics import Rate, rate

    mask = torch.tensor([True] * 8 + [False] * 2)
    r = rate(mask, confidence=0.9)
    lo, hi = wilson_interval(8, 10, 0.9)
    assert r == Rate(8, 10, lo, hi) and r.value == 0.8
    assert str(rate(mask)) == "80.00% [49.02, 94.33] (8/10)"
    assert Rate(0, 0, 0.0, 1.0).value == 0.0


def test_distortion_per_sample():
    from advkit.evaluate.metrics import distortion

    x = torch.zeros(2, 1, 2, 2)
    x_adv = x.clone()
    x_adv[0, 0, 0, 0], x_adv[0, 0, 1, 1] = 0.3, -0.4
    x_adv[1, 0, 0, 1] = torch.tensor(1e-6)  # exactly the threshold: not counted as changed
    x_adv[1, 0, 1, 0] = 0.5
    x[0] += 0.25  # sample 0 away from 0, so that x_adv + x is not x_adv - x
    x_adv[0] += 0.25
    dist = distortion(x_adv, x)
    assert dist["linf"].tolist() == pytest.approx([0.4, 0.5])
    assert dist["l2"].tolist() == pytest.approx([0.5, math.sqrt(0.25 + 1e-12)])
    assert dist["l0"].tolist() == [0.5, 0.25]


def test_mcnemar_edge_cases_and_bad_counts():
    from advkit.evaluate.stats import mcnemar, mcnemar_chi2, mcnemar_exact

    for b, c in ((True, 3), (2, True), (1.5, 2), (2, 1.5), (-1, 2), (2, -1)):
        with pytest.raises(ValueError, match="discordant counts must be integers >= 0"):
            mcnemar_exact(b, c)
    empty = torch.zeros(0, dtype=torch.bool)
    m = mcnemar(empty, empty)
    assert (m.n, m.difference, m.p_exact, m.chi2, m.p_chi2) == (0, 0.0, 1.0, 0.0, 1.0)
    a = torch.tensor([1, 1, 1, 1, 0, 0, 1, 0], dtype=torch.bool)
    b = torch.tensor([1, 0, 0, 0, 0, 1, 1, 0], dtype=torch.bool)
    assert mcnemar(a, b).p_chi2 == pytest.approx(mcnemar_chi2(3, 1, correction=True)[1])


def test_t_distribution_tails_and_arguments():
    from advkit.evaluate.stats import t_cdf, t_quantile

    assert t_cdf(float("inf"), 3) == 1.0 and t_cdf(float("-inf"), 3) == 0.0
    for t in (-1.0, -0.3, 0.5, 2.0):  # df = 1 is Cauchy: F(t) = 1/2 + atan(t) / pi
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
    with pytest.raises(ValueError, match="degrees of freedom must be > 0"):
        t_cdf(1.0, 0)
    for q in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"q must be in \(0, 1\)"):
            t_quantile(q, 3)


def test_pngs_round_trip_losslessly(tmp_path):
    from advkit.evaluate.quantize import load_png, save_pngs

    g = torch.Generator().manual_seed(0)
    gray = torch.randint(0, 256, (2, 1, 5, 7), generator=g).float() / 255
    rgb = torch.randint(0, 256, (1, 3, 4, 6), generator=g).float() / 255
    paths = save_pngs(gray, tmp_path / "out", ["a.png", "b.png"]) + save_pngs(rgb, tmp_path / "out", ["c.png"])
    assert [p.name for p in paths] == ["a.png", "b.png", "c.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png", "c.png"]  # no .part left
    for img, p in zip([*gray, *rgb], paths, strict=True):
        back = load_png(p)
        assert back.dtype == np.uint8 and back.shape == tuple(img.shape)
        assert np.array_equal(back, torch.round(img * 255).to(torch.uint8).numpy())
    with pytest.raises(ValueError, match="2 images but 1 names"):
        save_pngs(gray, tmp_path / "x", ["a.png"])
    # a folder that does not exist yet, parents included; pixels outside [0, 1] saturate instead of wrapping
    off = torch.tensor([-0.2, 0.0, 0.5, 1.0, 1.3]).view(1, 1, 1, 5)
    (p,) = save_pngs(off, tmp_path / "new" / "deeper", ["d.png"])
    assert load_png(p).flatten().tolist() == [0, 0, 128, 255, 255]


