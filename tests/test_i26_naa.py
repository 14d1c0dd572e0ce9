"""NAA (Zhang et al., CVPR 2022) as the objective part ``naa``: golden steps, budget, success, settings, refusals."""

from __future__ import annotations

import pytest
import torch

import advkit.attacks as A
from advkit.models.ensemble import Ensemble


def _batch(seed=0, n=5):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 12, 12, generator=g) * 0.8 + 0.1, torch.randint(0, 10, (n,), generator=g)


def _split(model):
    """The tiny ResNet cut at its first block (the middle of two): pixels -> features, features -> logits."""
    net = model.net

    def tail(x):
        return net.b1(torch.relu(net.conv((x - 0.5) / 0.25)))

    def head(f):
        return net.fc(net.b2(f).mean((2, 3)))

    return tail, head


def _step(x0, x, m, alpha, eps):
    return torch.min(torch.max(x + alpha * m.sign(), x0 - eps), x0 + eps).clamp(0, 1)


def _l1(g):
    return g / g.abs().flatten(1).mean(1).view(-1, 1, 1, 1)


def _attention(model, x, y, n, variant, gen):
    """IA = (1/N) sum_m dF(x' + m/N (x - x')) / dy, x' = 0, F the true class's softmax probability."""
    tail, head = _split(model)
    total = torch.zeros_like(tail(x))
    ms = range(0, n) if variant == "transferattack" else range(1, n + 1)
    for m in ms:
        xm = x + 0.1 * torch.randn(x.shape, generator=gen) if variant == "code" else x
        f = tail(m / n * xm).detach().requires_grad_(True)
        p = head(f).softmax(1)[torch.arange(len(y)), y].sum()
        total += torch.autograd.grad(p, f)[0]
    return total / n


@pytest.mark.parametrize("variant", ["paper", "code", "transferattack"])
def test_golden_two_steps_of_naa_mi(tiny_resnet, variant):
    """Two MI-FGSM steps minimising WA = sum A+ - gamma sum(-A-), A = (y(x_adv) - y(0)) * IA, by hand."""
    x, y = _batch()
    eps, alpha, n, gamma = 0.06, 0.03, 4, 0.5
    ia = _attention(tiny_resnet, x, y, n, variant, torch.Generator().manual_seed(5))
    tail, _ = _split(tiny_resnet)
    base = tail(torch.zeros_like(x)).detach()
    xa, mom = x.clone(), torch.zeros_like(x)
    for _ in range(2):
        leaf = xa.clone().requires_grad_(True)
        attr = (tail(leaf) - base) * ia
        pos, neg = attr[attr >= 0].sum(), -attr[attr < 0].sum()
        wa = gamma * pos - neg if variant == "code" else pos - gamma * neg
        g = torch.autograd.grad(-wa, leaf)[0]
        mom = mom + _l1(g)
        xa = _step(x, xa, mom, alpha, eps)
    atk = A.create("naa+mi", eps=eps, steps=2, alpha=alpha, naa_steps=n, naa_gamma=gamma, naa_variant=variant)
    r = atk(tiny_resnet, x, y, generator=torch.Generator().manual_seed(5))
    assert r.info["naa"]["layer"] == "net.b1"
    assert torch.allclose(r.x_adv, xa, atol=1e-6)
    # counted: N path points (forward + backward), the baseline (forward), two steps, the final check
    assert (r.forward_passes, r.backward_passes) == (n + 4, n + 2)


def test_gamma_and_variants_change_the_result(tiny_resnet):
    x, y = _batch(1)
    kw = {"eps": 0.1, "steps": 2, "naa_steps": 3}

    def run(**more):
        return A.create("naa", **kw, **more)(tiny_resnet, x, y, generator=torch.Generator().manual_seed(0)).x_adv

    a = run()
    assert not torch.equal(a, run(naa_gamma=0.0)) and not torch.equal(a, run(naa_variant="transferattack"))
    assert torch.equal(a, run())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_budget_and_bounds(tiny_resnet, norm):
    x, y = _batch(2, n=8)
    eps = 0.1 if norm == "linf" else 0.5
    r = A.create("naa+mi+di", eps=eps, steps=3, norm=norm, naa_steps=3)(tiny_resnet, x, y,
                                                                        generator=torch.Generator().manual_seed(3))
    d = (r.x_adv - x).flatten(1)
    assert float(d.abs().max() if norm == "linf" else d.norm(dim=1).max()) <= eps + 1e-6
    assert float(r.x_adv.min()) >= 0.0 and float(r.x_adv.max()) <= 1.0 and torch.isfinite(r.x_adv).all()


def test_fools_lenet(lenet, lenet_batch):
    """Measured on the 64 images, eps 0.1, 10 steps: ifgsm 1.00, naa 0.875, naa+mi 0.875 (a feature-level loss is a
    weaker white-box objective than the loss itself); floor 0.8."""
    x, y = lenet_batch
    r = A.create("naa+mi", eps=0.1)(lenet, x, y, generator=torch.Generator().manual_seed(0))
    assert r.info["naa"]["layer"] == "net.features.7"  # LeNet has no skips: its middle conv / linear layer
    assert r.success_rate >= 0.8, r.success_rate


@pytest.mark.parametrize("kwargs, match", [
    ({"naa_steps": 0}, r"naa_steps \(integration steps N\) must be an integer in \[1"),
    ({"N": 1.5}, "naa_steps"),
    ({"naa_gamma": -0.5}, r"naa_gamma must be a finite number in \[0, inf\)"),
    ({"naa_gamma": float("inf")}, "naa_gamma"),
    ({"naa_variant": "tf"}, "naa_variant must be one of 'paper', 'code', 'transferattack'"),
    ({"naa_layer": None}, "naa_layer must be a module name"),
])
def test_bad_settings_name_the_setting(kwargs, match):
    with pytest.raises(ValueError, match=match):
        A.create("naa", **kwargs)


def test_refusals(tiny_resnet):
    x, y = _batch()
    with pytest.raises(ValueError, match="naa_layer 'nope' is not a module"):
        A.create("naa", naa_layer="nope", steps=1)(tiny_resnet, x, y)
    with pytest.raises(ValueError, match="NAA is untargeted"):
        A.create("naa", steps=1)(tiny_resnet, x, y, target=(y + 1) % 10)
    with pytest.raises(ValueError, match="NAA on an ensemble is not supported"):
        A.create("naa", steps=1)(Ensemble([tiny_resnet, tiny_resnet]), x, y)
    with pytest.raises(ValueError, match="more than one objective"):
        A.create("fia+naa")
