"""Tests that can fail (issue 23): each is written against a one-line bug the rest of the suite let through: MI's
decay ignored, NI's look-ahead without the decay, the L2 projection or random start drawn wrongly, JSMA's 8-bit
re-check truncating, the L-inf branch of ``quantize``; and the contract's final projection."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from i23_reference import _batch, _Flat, _grad, _l1, _l2_step, _linf_step, _radius_cdf_distance
from torch import nn

import advkit.attacks as A
from advkit.attacks.core.base import Counter, ModelAttack
from advkit.attacks.core.budget import project
from advkit.attacks.gradient.transforms import random_start
from advkit.evaluate.quantize import quantize


# ------------------------------------------------------------------------------------------ MI / NI decay
@pytest.mark.parametrize("mu", [0.5, 0.0])
def test_golden_mi_uses_its_decay(tiny_resnet, mu):
    """Dong et al. 2018 with mu != 1: g_{t+1} = mu g_t + grad / ||grad||_1 (mu = 1 hides a decay that is ignored)."""
    x, y = _batch()
    eps, alpha = 0.05, 0.01
    x0, m = x, None
    xt = x
    for _ in range(3):
        g = _l1(_grad(tiny_resnet, xt, y))
        m = g if m is None else mu * m + g
        xt = _linf_step(x0, xt, m, alpha, eps)
    got = A.create("mi", eps=eps, steps=3, alpha=alpha, decay=mu)(tiny_resnet, x, y).x_adv
    assert torch.allclose(got, xt, atol=1e-7)
    plain = A.create("mi", eps=eps, steps=3, alpha=alpha, decay=1.0)(tiny_resnet, x, y).x_adv
    assert not torch.equal(got, plain)  # the decay changes the result on this batch


def test_golden_ni_lookahead_uses_the_decay(tiny_resnet):
    """Lin et al. 2020 with mu = 0.5: the gradient is taken at x_t + alpha * mu * g_t, not x_t + alpha * g_t."""
    x, y = _batch()
    eps, alpha, mu = 0.05, 0.01, 0.5
    xt, m = x, None
    for _ in range(3):
        look = xt if m is None else xt + alpha * mu * m
        g = _l1(_grad(tiny_resnet, look, y))
        m = g if m is None else mu * m + g
        xt = _linf_step(x, xt, m, alpha, eps)
    got = A.create("ni", eps=eps, steps=3, alpha=alpha, decay=mu)(tiny_resnet, x, y).x_adv
    assert torch.allclose(got, xt, atol=1e-7)


# ------------------------------------------------------------------------------------------------------ L2
def test_l2_projection_moves_only_points_outside_the_ball():
    """Radial projection: a point inside the ball is left where it is; one outside lands exactly on the sphere."""
    g = torch.Generator().manual_seed(0)
    x = torch.full((4, 1, 8, 8), 0.5)
    d = torch.randn(x.shape, generator=g)
    d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * torch.tensor([0.2, 0.7, 1.0, 3.0]).view(-1, 1, 1, 1)
    out = project(x + d, x, 1.0, "l2")
    assert torch.allclose(out[:3], (x + d)[:3], atol=1e-7)  # inside or on the sphere: unchanged
    assert torch.allclose(out[3], x[3] + d[3] / 3.0, atol=1e-7)  # outside: scaled by eps / ||d||
    assert (out - x).flatten(1).norm(dim=1).tolist() == pytest.approx([0.2, 0.7, 1.0, 1.0], abs=1e-5)


def test_golden_l2_ifgsm_two_steps(tiny_resnet):
    """Two L2 steps: the first ends inside the ball (kept as is), the second is projected back onto it."""
    x, y = _batch()
    eps, alpha = 0.5, 0.3
    x1 = _l2_step(x, x, _grad(tiny_resnet, x, y), alpha, eps)
    x2 = _l2_step(x, x1, _grad(tiny_resnet, x1, y), alpha, eps)
    assert (x1 - x).flatten(1).norm(dim=1).tolist() == pytest.approx([alpha] * 5, abs=1e-5)
    one = A.create("ifgsm", eps=eps, steps=1, alpha=alpha, norm="l2")(tiny_resnet, x, y).x_adv
    assert torch.allclose(one, x1, atol=1e-6)
    got = A.create("ifgsm", eps=eps, steps=2, alpha=alpha, norm="l2")(tiny_resnet, x, y).x_adv
    assert torch.allclose(got, x2, atol=1e-6)



def test_l2_random_start_is_uniform_in_the_ball():
    """PGD's L2 start is uniform in the ball: radius eps * U^(1/d) (its quantiles sit at eps * q^(1/d), almost all
    near the sphere in high dimension), the direction isotropic. eps * U (torchattacks' PGDL2) fails this."""
    n, eps = 4000, 0.5
    x = torch.full((n, 3, 8, 8), 0.5)  # far from 0 and 1: no clipping at this radius
    d = 3 * 8 * 8
    start = random_start(x, eps, "l2", torch.Generator().manual_seed(0))
    delta = (start - x).flatten(1)
    r = delta.norm(dim=1)
    assert float(r.max()) <= eps + 1e-5
    assert _radius_cdf_distance(r, eps, d) < 0.03  # 1% critical value of KS at n = 4000: 0.026
    for q in (0.1, 0.5, 0.9):
        assert float(r.quantile(q)) == pytest.approx(eps * q ** (1 / d), abs=2e-3)
    unit = delta / r[:, None]
    assert float(unit.mean(0).abs().max()) < 5 / math.sqrt(d * n)  # isotropic: each coordinate's mean within 5 sd
    assert float(unit.var(0).mean()) == pytest.approx(1 / d, rel=0.05)


def test_pgd_l2_start_through_the_attack_is_uniform_in_the_ball():
    n, eps, d = 2000, 1.0, 144  # per-pixel sd 1/12: no clipping at 0 or 1 from 0.5
    x = torch.full((n, 1, 12, 12), 0.5)
    y = torch.zeros(n, dtype=torch.long)
    r = A.create("pgd", eps=eps, steps=1, norm="l2")(_Flat(), x, y, generator=torch.Generator().manual_seed(1))
    radius = (r.x_adv - x).flatten(1).norm(dim=1)
    assert _radius_cdf_distance(radius, eps, d) < 0.04  # 1% critical value at n = 2000: 0.036
    assert float(radius.median()) == pytest.approx(eps * 0.5 ** (1 / d), abs=5e-3)


# ------------------------------------------------------------------------------------------------ quantize
def test_quantize_linf_rounds_then_clips_to_whole_levels_inside_the_budget():
    x = torch.tensor([0, 10, 100, 200, 250, 255, 128, 128], dtype=torch.float32).view(1, 1, 1, 8) / 255
    moved = torch.tensor([3.7, 8.4, 8.6, -8.6, 9.0, -20.0, -3.2, 0.49]).view(1, 1, 1, 8) / 255
    x_adv = (x + moved).clamp(0, 1)
    q = quantize(x_adv, x, eps=8 / 255, norm="linf")
    # rounded, not truncated (3.7 -> 4, -3.2 -> -3), and never more than floor(eps * 255) = 8 levels away
    assert torch.round(q * 255).flatten().tolist() == [4, 18, 108, 192, 255, 247, 125, 128]
    assert float((q - x).abs().max()) <= 8 / 255 + 1e-7
    # eps = 0.03 is 7.65 levels: the largest whole number of levels inside it is 7
    q = quantize(x_adv, x, eps=0.03, norm="linf")
    assert torch.round(q * 255).flatten().tolist() == [4, 17, 107, 193, 255, 248, 125, 128]
    # no budget: only rounded
    assert torch.round(quantize(x_adv, x) * 255).flatten().tolist() == [4, 18, 109, 191, 255, 235, 125, 128]
    # a zero budget gives the clean image back
    assert torch.equal(quantize(x_adv, x, eps=0.0, norm="linf"), torch.round(x * 255) / 255)


def test_quantize_l0_results_are_only_rounded():
    x = torch.full((1, 1, 1, 4), 100 / 255)
    x_adv = torch.tensor([1.0, 0.0, 100.6 / 255, 100.4 / 255]).view(1, 1, 1, 4)
    q = quantize(x_adv, x, eps=0.1, norm="l0")
    assert torch.round(q * 255).flatten().tolist() == [255, 0, 101, 100]


# ----------------------------------------------------------------------------------- JSMA's 8-bit re-check
def _threshold_model(level: float) -> nn.Module:
    """Two classes on 1x2x2 inputs: class 1 exactly when feature 0 is above ``level / 255`` (feature 1..3 unused)."""
    lin = nn.Linear(4, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[0, 0], lin.weight[1, 0] = -50.0, 50.0
        lin.bias.copy_(torch.tensor([50.0, -50.0]) * level / 255)
    net = nn.Sequential(nn.Flatten(), lin)
    net.num_classes = 2  # type: ignore[assignment]
    return net.eval()


@pytest.mark.parametrize("theta_levels, level, expected_8bit", [
    (63.75, 163.5, 1.0),  # 163.75 rounds up to 164 > 163.5: still the target (truncating to 163 loses it)
    (63.4, 163.3, 0.0),  # 163.4 rounds down to 163 < 163.3: the float example succeeds, the 8-bit one does not
])
def test_jsma_study_rechecks_success_on_rounded_8bit_examples(theta_levels, level, expected_8bit):
    from advkit.attacks.saliency.jsma import JSMA
    from advkit.reproduce.jsma import reproduce_jsma

    model = _threshold_model(level)
    x = torch.full((3, 1, 2, 2), 100 / 255)
    data = (x, torch.zeros(3, dtype=torch.long))
    attack = JSMA(theta=theta_levels / 255, upsilon=1.0, pairs=False, output="logits")
    s = reproduce_jsma(model, data, attack=attack)
    assert s.summary["success_rate"] == 1.0
    assert torch.allclose(s.x_adv[:, 0, 0, 0], torch.full((3,), (100 + theta_levels) / 255))
    assert s.summary["success_rate_8bit"] == expected_8bit


# ------------------------------------------------------------------------------- the contract, end to end
@dataclass(frozen=True)
class _Overshoot(ModelAttack):
    """Returns x + 2 eps everywhere: the contract must project it back."""

    name: ClassVar[str] = "overshoot"

    def _run(self, model: Counter, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
             generator: torch.Generator | None) -> torch.Tensor:
        return x + 2 * self.eps


def test_the_public_call_projects_and_reports_success_from_the_projected_batch(tiny_resnet):
    x, y = _batch()
    r = _Overshoot(eps=0.05)(tiny_resnet, x, y)
    assert torch.allclose(r.x_adv, (x + 0.05).clamp(0, 1), atol=1e-7)
    with torch.no_grad():
        pred = tiny_resnet(r.x_adv).argmax(1)
    assert torch.equal(r.pred, pred) and torch.equal(r.success, pred != y)
    t = (y + 1) % 10
    rt = _Overshoot(eps=0.05)(tiny_resnet, x, y, target=t)
    assert torch.equal(rt.success, pred == t) and torch.equal(rt.target, t)
    assert r.success_rate == pytest.approx(float((pred != y).float().mean()))


