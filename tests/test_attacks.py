"""The attack contract, the iterative engine and the name grammar."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import advkit.attacks as A
from advkit.attacks.gradient.transforms import gaussian_kernel, input_diversity, l1_normalise, smooth_gradient

GRADIENT_ATTACKS = [n for n in A.names() if n not in A.standalone()]
NO_SGM = [n for n in GRADIENT_ATTACKS if not A.needs_skip_connections(n)]


def _grad(model, x, y):
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    return torch.autograd.grad(loss, x)[0]


@pytest.mark.parametrize("name", GRADIENT_ATTACKS)
@settings(max_examples=6, deadline=None)
@given(eps=st.floats(0.0, 0.5), steps=st.integers(1, 3), seed=st.integers(0, 2**31 - 1),
       norm=st.sampled_from(["linf", "l2"]))
def test_budget_and_bounds_hold(name, eps, steps, seed, norm):
    """For every registered gradient attack: |x_adv - x| <= eps (L-inf or L2) and 0 <= x_adv <= 1, to 1e-6."""
    from advkit.models import Classifier
    from tests.conftest import TinyResNet

    torch.manual_seed(0)
    model = Classifier(TinyResNet(), (0.5,), (0.25,), (1, 12, 12), 10).freeze()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 1, 12, 12, generator=g)
    y = torch.randint(0, 10, (4,), generator=g)
    assume(all(norm in p.norms for p in A.create(name).parts))  # PI-FGSM is L-inf only
    kw = {"eps": eps, "norm": norm} if name != "fgsm" else {"eps": eps, "norm": norm}
    if name != "fgsm":
        kw["steps"] = steps
    if "ti" in name:
        kw["ti_kernel"] = 3
    r = A.create(name, **kw)(model, x, y, generator=g)
    d = (r.x_adv - x).flatten(1)
    if norm == "linf":
        assert float(d.abs().max()) <= eps + 1e-6
    else:
        assert float(d.norm(dim=1).max()) <= eps + 1e-5
    assert float(r.x_adv.min()) >= 0.0 and float(r.x_adv.max()) <= 1.0
    assert torch.isfinite(r.x_adv).all()


# White-box success on 64 images the shipped LeNet classifies correctly, eps 0.1 (Fashion-MNIST). Each floor
# is well below what was measured (FGSM 0.92, the iterative ones 0.99-1.00), so a regression that weakens an
# attack by a few points is still caught by the ones that must reach 95%.
# Input transformations that average over strongly changed copies, and feature-level objectives, fool the white-box
# LeNet less than its own gradient does (measured on these 64 images: bsr 0.42, decowa 0.73, sia 0.86, naa 0.875):
# their floors sit below the measured value, far above the noise control's 0.12.
FLOORS = {"fgsm": 0.75, "ti": 0.85, "mi+di+ti": 0.85, "naa": 0.8, "bsr": 0.35, "decowa": 0.65, "sia": 0.8}


@pytest.mark.parametrize("name", NO_SGM)
def test_attack_drops_accuracy(name, lenet, lenet_batch):
    x, y = lenet_batch
    kw = {"eps": 0.1}
    if "ti" in name:
        kw["ti_kernel"] = 5
    r = A.create(name, **kw)(lenet, x, y, generator=torch.Generator().manual_seed(0))
    assert r.success_rate >= FLOORS.get(name, 0.95), f"{name}: success {r.success_rate:.3f}"
    with torch.no_grad():
        assert (lenet(r.x_adv).argmax(1) != y).float().mean() == pytest.approx(r.success_rate)


def test_targeted_reaches_target(lenet, lenet_batch):
    x, y = lenet_batch
    target = (y + 1) % 10
    r = A.create("ifgsm", eps=0.2, steps=20)(lenet, x, y, target=target)
    assert r.success_rate >= 0.8
    with torch.no_grad():
        pred = lenet(r.x_adv).argmax(1)
    assert torch.equal(r.success, pred == target)


def test_same_seed_same_result(tiny_resnet):
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(6, 1, 12, 12, generator=g), torch.randint(0, 10, (6,), generator=g)
    atk = A.create("pgd+mi+di", eps=0.1, steps=3)
    a = atk(tiny_resnet, x, y, generator=torch.Generator().manual_seed(7)).x_adv
    b = atk(tiny_resnet, x, y, generator=torch.Generator().manual_seed(7)).x_adv
    c = atk(tiny_resnet, x, y, generator=torch.Generator().manual_seed(8)).x_adv
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# ------------------------------------------------------------------------------------------ golden one-step
def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(5, 1, 12, 12, generator=g) * 0.8 + 0.1, torch.randint(0, 10, (5,), generator=g)


def test_golden_fgsm(tiny_resnet):
    """Goodfellow et al. 2015: x' = clip(x + eps * sign(grad_x J))."""
    x, y = _batch()
    eps = 0.05
    expected = (x + eps * _grad(tiny_resnet, x, y).sign()).clamp(0, 1)
    got = A.create("fgsm", eps=eps)(tiny_resnet, x, y).x_adv
    assert torch.allclose(got, expected, atol=1e-7)


def test_golden_ifgsm_two_steps(tiny_resnet):
    """Kurakin et al. 2017: x_{t+1} = clip_{x,eps}(x_t + alpha * sign(grad))."""
    x, y = _batch()
    eps, alpha = 0.05, 0.03
    x1 = torch.min(torch.max(x + alpha * _grad(tiny_resnet, x, y).sign(), x - eps), x + eps).clamp(0, 1)
    x2 = torch.min(torch.max(x1 + alpha * _grad(tiny_resnet, x1, y).sign(), x - eps), x + eps).clamp(0, 1)
    got = A.create("ifgsm", eps=eps, steps=2, alpha=alpha)(tiny_resnet, x, y).x_adv
    assert torch.allclose(got, x2, atol=1e-7)


def test_golden_pgd_random_start(tiny_resnet):
    """Madry et al. 2018: uniform start in the ball from the generator, then a signed step of 2.5 eps / T."""
    x, y = _batch()
    eps = 0.05
    g = torch.Generator().manual_seed(3)
    x0 = (x + (torch.rand(x.shape, generator=g) * 2 - 1) * eps).clamp(0, 1)
    alpha = 2.5 * eps / 1
    expected = torch.min(torch.max(x0 + alpha * _grad(tiny_resnet, x0, y).sign(), x - eps), x + eps).clamp(0, 1)
    got = A.create("pgd", eps=eps, steps=1)(tiny_resnet, x, y, generator=torch.Generator().manual_seed(3)).x_adv
    assert torch.allclose(got, expected, atol=1e-7)


def test_golden_mi_momentum_order(tiny_resnet):
    """Dong et al. 2018: g_{t+1} = mu g_t + grad / ||grad||_1, step = alpha * sign(g_{t+1}) (sign after)."""
    x, y = _batch()
    eps, alpha, mu = 0.05, 0.02, 1.0
    g1 = _grad(tiny_resnet, x, y)
    m1 = g1 / g1.abs().flatten(1).sum(1).view(-1, 1, 1, 1)
    x1 = torch.min(torch.max(x + alpha * m1.sign(), x - eps), x + eps).clamp(0, 1)
    g2 = _grad(tiny_resnet, x1, y)
    m2 = mu * m1 + g2 / g2.abs().flatten(1).sum(1).view(-1, 1, 1, 1)
    x2 = torch.min(torch.max(x1 + alpha * m2.sign(), x - eps), x + eps).clamp(0, 1)
    got = A.create("mi", eps=eps, steps=2, alpha=alpha, decay=mu)(tiny_resnet, x, y).x_adv
    assert torch.allclose(got, x2, atol=1e-7)


def test_golden_ti_kernel_and_step(tiny_resnet):
    """Dong et al. 2019: the step follows sign(W * grad) with W the gkern(15, 3) Gaussian."""
    k = gaussian_kernel(15, 3.0)
    assert k.shape == (15, 15) and abs(float(k.sum()) - 1) < 1e-12
    assert float(k[7, 7]) == float(k.max()) and torch.allclose(k, k.T)
    x, y = _batch()
    eps = 0.05
    k5 = gaussian_kernel(5, 3.0)
    gs = F.conv2d(_grad(tiny_resnet, x, y), k5.float().view(1, 1, 5, 5), padding=2)
    expected = (x + eps * gs.sign()).clamp(0, 1)
    got = A.create("ti", eps=eps, steps=1, alpha=eps, ti_kernel=5)(tiny_resnet, x, y).x_adv
    assert torch.allclose(got, expected, atol=1e-7)
    assert torch.allclose(smooth_gradient(torch.ones(1, 1, 9, 9), k5)[0, 0, 4, 4], torch.tensor(1.0))


def test_golden_di(tiny_resnet):
    """Xie et al. 2019: the gradient is taken through the random resize-and-pad of the input."""
    x, y = _batch()
    eps = 0.05
    g = torch.Generator().manual_seed(5)
    xr = x.clone().requires_grad_(True)
    inp = input_diversity(xr, 1.0, 1.1, g)
    grad = torch.autograd.grad(F.cross_entropy(tiny_resnet(inp), y, reduction="sum"), xr)[0]
    expected = (x + eps * grad.sign()).clamp(0, 1)
    got = A.create("di", eps=eps, steps=1, alpha=eps, di_prob=1.0)(
        tiny_resnet, x, y, generator=torch.Generator().manual_seed(5)).x_adv
    assert torch.allclose(got, expected, atol=1e-7)
    assert input_diversity(x, 0.0, 1.1, g) is x  # probability 0: the identity


def test_l1_normalise_is_per_sample():
    g = torch.tensor([[[[1.0, -3.0]]], [[[10.0, 10.0]]]])
    out = l1_normalise(g)
    assert torch.allclose(out.abs().flatten(1).mean(1), torch.ones(2))


# --------------------------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("bad, match", [
    (lambda x, y: (x * 2, y, None), r"pixels in \[0, 1\]"),
    (lambda x, y: (x.masked_fill(torch.zeros_like(x, dtype=torch.bool).index_fill_(0, torch.tensor([0]), True),
                                 float("nan")), y, None), "NaN"),
    (lambda x, y: (x[0], y, None), r"shape \(N, C, H, W\)"),
    (lambda x, y: (x, y[:-1], None), "must have shape"),
    (lambda x, y: (x, y.float(), None), "integer tensor"),
    (lambda x, y: (x, y, y.clone()), "target equals the true label"),
    (lambda x, y: (x, y + 20, None), "out of range|must be <"),
    (lambda x, y: (x, y, (y + 1) % 10 + 20), "out of range"),
])
def test_bad_inputs_raise_clear_errors(tiny_resnet, bad, match):
    x, y = _batch()
    xb, yb, tb = bad(x, y)
    with pytest.raises(ValueError, match=match):
        A.create("ifgsm", eps=0.1, steps=1)(tiny_resnet, xb, yb, target=tb)


@pytest.mark.parametrize("kwargs, match", [
    ({"eps": -0.1}, "eps must be"), ({"eps": float("nan")}, "eps must be"), ({"steps": 0}, "steps"),
    ({"norm": "l1"}, "norm"), ({"loss": "hinge"}, "loss"),
])
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        A.create("ifgsm", **kwargs)


def test_model_state_restored_even_on_error(tiny_resnet):
    model = tiny_resnet
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)

    class Boom(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("boom")
            return self.inner(x)

    wrapped = Boom(model)
    x, y = _batch()
    with pytest.raises(RuntimeError, match="boom"):
        A.create("ifgsm", eps=0.1, steps=3)(wrapped, x, y)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())  # autograd.grad, never .backward()


def test_pass_counts(tiny_resnet):
    x, y = _batch()
    r = A.create("mi+di", eps=0.1, steps=4)(tiny_resnet, x, y)
    assert (r.forward_passes, r.backward_passes) == (5, 4)  # 4 steps + the final success check


def test_attack_is_frozen_and_not_mutated_by_call(tiny_resnet):
    atk = A.create("ifgsm", eps=0.1, steps=2)
    before = atk.config()
    x, y = _batch()
    atk(tiny_resnet, x, y)
    assert atk.config() == before
    with pytest.raises(dataclasses.FrozenInstanceError):
        atk.eps = 0.3  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------- the grammar
@pytest.mark.parametrize("name, match", [
    ("sgm+foo", "unknown attack part"), ("mi+mi", "repeats"), ("pgd+fgsm", "more than one base"), ("mi++di", "empty"),
])
def test_grammar_errors(name, match):
    with pytest.raises(ValueError, match=match):
        A.create(name)


def test_grammar_rejects_settings_of_absent_parts():
    with pytest.raises(ValueError, match="'gamma' does not apply to 'mi'"):
        A.create("mi", gamma=0.5)
    atk = A.create("sgm+mi+di", eps=16 / 255, gamma=0.5, decay=0.9)
    assert (atk.gamma, atk.decay, atk.di_prob, atk.label) == (0.5, 0.9, 0.5, "sgm+mi+di")
    assert A.create("di+sgm").label == "sgm+di"
    assert A.create("fgsm", eps=0.1).step_size == pytest.approx(0.1)
    assert A.create("ifgsm", eps=0.1, steps=10).step_size == pytest.approx(0.01)


# ---------------------------------------------------------------------------------------------------- SGM
def test_sgm_gamma_one_is_bit_identical_to_base(tiny_resnet):
    x, y = _batch()
    for base in ("ifgsm", "mi+di"):
        plain = A.create(base, eps=0.05, steps=3)(tiny_resnet, x, y, generator=torch.Generator().manual_seed(1))
        sgm = A.create("sgm+" + base, eps=0.05, steps=3, gamma=1.0)(
            tiny_resnet, x, y, generator=torch.Generator().manual_seed(1))
        assert torch.equal(plain.x_adv, sgm.x_adv)


def test_sgm_reports_hooks_and_changes_the_step(tiny_resnet):
    x, y = _batch()
    plain = A.create("ifgsm", eps=0.05, steps=2)(tiny_resnet, x, y)
    r = A.create("sgm", eps=0.05, steps=2, gamma=0.2)(tiny_resnet, x, y)
    assert r.info["sgm"]["connections"] == 2 and r.info["sgm"]["hooks_fired"] >= 2 * 2
    assert not torch.equal(plain.x_adv, r.x_adv)


def test_sgm_on_a_model_without_skips_is_an_error(lenet, lenet_batch):
    x, y = lenet_batch
    with pytest.raises(ValueError, match="no skip connections"):
        A.create("sgm", eps=0.1)(lenet, x[:2], y[:2])


def test_sgm_auto_gamma_follows_card_then_authors_rule(tiny_resnet):
    from advkit.attacks.gradient.engine import resolve_gamma
    from advkit.models import get_arch

    assert resolve_gamma("auto", tiny_resnet) == 0.2  # residual, no card: the authors' ResNet value
    assert resolve_gamma("auto", get_arch("densenet_bc40").build(1, 10, 28)) == 0.5  # dense: the DenseNet value
    tiny_resnet.card["sgm_gamma"] = 0.7
    try:
        assert resolve_gamma("auto", tiny_resnet) == 0.7
        x, y = _batch()
        assert A.create("sgm", eps=0.05, steps=1)(tiny_resnet, x, y).info["sgm"]["gamma"] == 0.7
    finally:
        del tiny_resnet.card["sgm_gamma"]
    assert resolve_gamma(0.3, tiny_resnet) == 0.3 and resolve_gamma(None, tiny_resnet) is None
    with pytest.raises(ValueError, match="gamma"):
        A.create("sgm", gamma=1.5)


def test_8bit_rounding_keeps_an_l2_budget():
    """Rounding an L2 example to 8 bits can push it past its radius; quantize re-projects it onto the grid within
    the radius, and leaves examples that were already inside unchanged."""
    from advkit.evaluate.quantize import quantize

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (200, 1, 28, 28), generator=g).float() / 255
    d = torch.randn(x.shape, generator=g)
    eps = 1.0
    x_adv = x + eps * d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)  # dense, on the sphere
    # sparse ones, as L2 attacks often make: 60 pixels moved by 3.6 levels each, exactly on the sphere
    x[100:] = 128 / 255
    sparse = torch.zeros(100, 784)
    sparse[:, :60] = 3.6 / 255 * torch.where(torch.rand(100, 60, generator=g) < 0.5, -1.0, 1.0)
    sparse *= eps / sparse.norm(dim=1, keepdim=True)
    x_adv[100:] = x[100:] + sparse.view(100, 1, 28, 28)
    x_adv = x_adv.clamp(0, 1)
    naive = torch.round(x_adv * 255) / 255
    assert int(((naive - x).flatten(1).norm(dim=1) > eps + 1e-6).sum()) > 0  # the problem is real
    q = quantize(x_adv, x, eps, "l2")
    assert float((q - x).flatten(1).norm(dim=1).max()) <= eps + 1e-6
    assert torch.equal(torch.round(q * 255), q * 255) and 0 <= float(q.min()) and float(q.max()) <= 1
    inside = (naive - x).flatten(1).norm(dim=1) <= eps + 1e-6
    assert torch.equal(q[inside], naive[inside])
