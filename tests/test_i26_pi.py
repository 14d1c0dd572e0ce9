"""PI-FGSM (Gao et al., ECCV 2020): golden steps from the paper's Algorithm 1, the budget, white-box success on the
shipped LeNet, combinations with MI / DI / TI, and refused settings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import advkit.attacks as A


def _batch(seed=0, n=4):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 12, 12, generator=g) * 0.8 + 0.1, torch.randint(0, 10, (n,), generator=g)


def _grad(model, x, y):
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)[0]


def _wp(k=3):
    """The paper's project kernel: 1/(k^2-1) off the centre, 0 at the centre, as a depth-wise conv weight."""
    w = torch.ones(k, k) / (k * k - 1)
    w[k // 2, k // 2] = 0
    return w.view(1, 1, k, k)


def _pi_by_hand(model, x, y, eps, steps, beta, gamma, momentum=None):
    """Algorithm 1 of Gao et al. written out with tensor formulas (optionally with MI's accumulation)."""
    alpha = eps / steps
    a = torch.zeros_like(x)
    xa = x.clone()
    m = torch.zeros_like(x)
    for _ in range(steps):
        g = _grad(model, xa, y)
        if momentum is not None:
            m = momentum * m + g / g.abs().mean(dim=(1, 2, 3), keepdim=True)
            g = m
        a = a + beta * alpha * g.sign()
        cut = torch.clamp(a.abs() - eps, min=0) * a.sign()
        proj = gamma * torch.sign(F.conv2d(cut, _wp(), padding=1))
        a = a + proj
        xa = xa + beta * alpha * g.sign() + proj
        xa = torch.min(torch.max(xa, x - eps), x + eps).clamp(0, 1)
    return xa


@pytest.mark.parametrize("variant, gamma_of", [("paper", lambda eps, steps: 10 * eps / steps),
                                               ("code", lambda eps, steps: 16 / 255)])
def test_golden_pi_ten_steps(tiny_resnet, variant, gamma_of):
    x, y = _batch()
    eps, steps = 0.1, 10
    want = _pi_by_hand(tiny_resnet, x, y, eps, steps, 10.0, gamma_of(eps, steps))
    got = A.create("pi", eps=eps, steps=steps, pi_variant=variant)(tiny_resnet, x, y).x_adv
    assert torch.allclose(got, want, atol=1e-6)
    # the projection really acts: amplified I-FGSM without it lands elsewhere
    plain = A.create("ifgsm", eps=eps, steps=steps, alpha=10 * eps / steps)(tiny_resnet, x, y).x_adv
    assert (got - plain).abs().max() > 1e-3


def test_golden_mpi_with_momentum(tiny_resnet):
    x, y = _batch(1)
    want = _pi_by_hand(tiny_resnet, x, y, 0.08, 3, 10.0, 10 * 0.08 / 3, momentum=1.0)
    got = A.create("pi+mi", eps=0.08, steps=3)(tiny_resnet, x, y).x_adv
    assert torch.allclose(got, want, atol=1e-6)


def test_pi_gamma_and_beta_are_used(tiny_resnet):
    x, y = _batch(2)
    want = _pi_by_hand(tiny_resnet, x, y, 0.1, 3, 5.0, 0.02)
    got = A.create("pi", eps=0.1, steps=3, amplification_factor=5.0, pi_gamma=0.02)(tiny_resnet, x, y).x_adv
    assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("name", ["pi", "pi+mi+di+ti"])
def test_budget_holds_and_costs_what_ifgsm_costs(tiny_resnet, name):
    x, y = _batch(3, n=6)
    kw = {"ti_kernel": 3} if "ti" in name else {}
    r = A.create(name, eps=0.05, steps=5, **kw)(tiny_resnet, x, y, generator=torch.Generator().manual_seed(1))
    assert float((r.x_adv - x).abs().max()) <= 0.05 + 1e-6
    assert float(r.x_adv.min()) >= 0 and float(r.x_adv.max()) <= 1
    assert r.backward_passes == 5 and r.forward_passes == 6


@pytest.mark.parametrize("eps, floor", [(0.1, 0.95), (0.03, 0.5)])
def test_pi_fools_lenet_at_least_as_often_as_ifgsm(lenet, lenet_batch, eps, floor):
    x, y = lenet_batch
    pi = A.create("pi", eps=eps, steps=10)(lenet, x, y).success.float().mean().item()
    ifgsm = A.create("ifgsm", eps=eps, steps=10)(lenet, x, y).success.float().mean().item()
    # measured (64 images, 10 steps): eps 0.1: pi 1.00, ifgsm 1.00; eps 0.03: pi 0.578, ifgsm 0.5625
    # (TransferAttack's fixed gamma 16/255 > eps there: pi_variant="code" only 0.27)
    assert pi >= floor and pi >= ifgsm - 0.05


def test_l2_is_refused_when_the_attack_is_built():
    with pytest.raises(ValueError, match="pi .*defined for norm 'linf' only, got norm='l2'; use norm='linf'"):
        A.create("pi+mi", eps=0.5, norm="l2")


@pytest.mark.parametrize("kwargs, match", [
    ({"pi_beta": 0}, r"pi_beta .* in \(0, inf\)"),
    ({"pi_kernel": 1}, r"pi_kernel .* in \[3, inf\)"),
    ({"pi_kernel": 4}, "pi_kernel .* odd integer >= 3"),
    ({"pi_kernel": 3.0}, "pi_kernel .* an integer"),
    ({"pi_gamma": -0.1}, r"pi_gamma .* in \[0, inf\)"),
    ({"pi_variant": "tf"}, "pi_variant must be one of 'paper', 'code'"),
    ({"pi_variant": "code", "pi_gamma": 0.1}, "give one"),
])
def test_bad_settings_name_the_setting(kwargs, match):
    with pytest.raises(ValueError, match=match):
        A.create("pi", **kwargs)
