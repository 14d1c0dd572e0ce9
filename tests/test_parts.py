"""The parts registry and the parts added on it: golden one-step tests against each paper's formula, and
registry-wide checks so that a part is tested the day it is registered."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import advkit.attacks as A
from advkit.attacks.gradient.inputs import other_class_partner

GRADIENT_ATTACKS = [n for n in A.names() if n not in A.standalone()]
NEEDS_SKIPS = [n for n in GRADIENT_ATTACKS if A.needs_skip_connections(n)]


def _batch(seed=0, n=5):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 12, 12, generator=g) * 0.8 + 0.1, torch.randint(0, 10, (n,), generator=g)


def _grad(model, x, y):
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)[0]


def _l1(g):
    return g / g.abs().flatten(1).mean(1).view(-1, 1, 1, 1)


def _step(x0, x, g, alpha, eps):
    return torch.min(torch.max(x + alpha * g.sign(), x0 - eps), x0 + eps).clamp(0, 1)


# ------------------------------------------------------------------------------------------------- registry
def test_names_come_from_the_registry():
    names = A.names()
    for token in A.parts():
        assert token in names
    assert {"vmi", "vni"} <= set(names) and "jsma" in names
    assert A.parse("vmi+di") == ["ifgsm", "mi", "di", "vt"] and A.label("di+vmi") == "vmi+di"


def test_registering_a_token_twice_raises():
    with pytest.raises(ValueError, match="already registered"):
        A.register_part(A.parts()["mi"])
    with pytest.raises(ValueError, match="already registered"):
        A.register_macro("vmi", ("mi", "vt"))


@pytest.mark.parametrize("name, match", [
    ("mi+ni", "already accumulates momentum"), ("si+admix", "already averages"), ("vmi+vt", "repeats"),
    ("bim+pgd", "more than one base"),
])
def test_conflicting_parts_are_errors(name, match):
    with pytest.raises(ValueError, match=match):
        A.create(name)


@pytest.mark.parametrize("name, kwargs, match", [
    ("si", {"si_copies": 0}, "si_copies"), ("admix", {"eta": -1.0}, "admix_eta"),
    ("vmi", {"vt_beta": float("nan")}, "vt_beta"), ("vt", {"neighbours": 2.5}, "vt_neighbours"),
    ("mi", {"decay": float("inf")}, "decay"), ("ti", {"ti_nsig": float("nan")}, "ti_nsig"),
    ("ila", {"ila_steps": 0}, "ila_steps"), ("linbp", {"linbp_start": -1}, "linbp_start"),
    ("ni", {"gamma": 0.5}, "'gamma' does not apply to 'ni'"),
])
def test_bad_part_settings_name_the_setting(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        A.create(name, **kwargs)


@pytest.mark.parametrize("name", GRADIENT_ATTACKS)
def test_same_seed_same_result_for_every_attack(name, tiny_resnet):
    x, y = _batch(1, n=6)
    kw = {"ti_kernel": 3} if "ti" in A.parse(name) else {}
    atk = A.create(name, eps=0.1, **kw) if A.parse(name)[0] == "fgsm" else A.create(name, eps=0.1, steps=2, **kw)
    a = atk(tiny_resnet, x, y, generator=torch.Generator().manual_seed(7))
    b = atk(tiny_resnet, x, y, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)


# White-box success on 64 Fashion-MNIST test images the shipped resnet20 classifies correctly, eps 0.1: every
# attack that needs skip connections measured 0.98-1.00; a regression that breaks a backward modifier drops far
# below the floor.
@pytest.mark.parametrize("name", NEEDS_SKIPS)
def test_skip_connection_attacks_drop_accuracy_on_a_zoo_resnet(name, fmnist_test):
    import advkit.models
    from advkit.evaluate import predict

    model = advkit.models.load("resnet20", dataset="fashion-mnist")
    ok = predict(model, fmnist_test.x[:256]) == fmnist_test.y[:256]
    x, y = fmnist_test.x[:256][ok][:64], fmnist_test.y[:256][ok][:64]
    r = A.create(name, eps=0.1)(model, x, y, generator=torch.Generator().manual_seed(0))
    assert r.success_rate >= 0.9, f"{name}: success {r.success_rate:.3f}"


# ---------------------------------------------------------------------------------------- golden one-step
def test_golden_ni_lookahead(tiny_resnet):
    """Lin et al. 2020: x_nes = x_t + alpha mu g_t; g_{t+1} = mu g_t + grad(x_nes) / ||.||_1; sign step."""
    x, y = _batch()
    eps, alpha, mu = 0.05, 0.02, 1.0
    m1 = _l1(_grad(tiny_resnet, x, y))
    x1 = _step(x, x, m1, alpha, eps)
    m2 = mu * m1 + _l1(_grad(tiny_resnet, x1 + alpha * mu * m1, y))
    x2 = _step(x, x1, m2, alpha, eps)
    got = A.create("ni", eps=eps, steps=2, alpha=alpha)(tiny_resnet, x, y).x_adv
    assert torch.allclose(got, x2, atol=1e-7)


def test_golden_si_scale_copies(tiny_resnet):
    """Lin et al. 2020: the gradient is the mean over the copies x / 2^i, i = 0..4."""
    x, y = _batch()
    eps = 0.05
    g = sum(_grad_through(tiny_resnet, x, y, lambda t, i=i: t / 2 ** i) for i in range(5)) / 5
    got = A.create("si", eps=eps, steps=1, alpha=eps)(tiny_resnet, x, y).x_adv
    assert torch.allclose(got, _step(x, x, g, eps, eps), atol=1e-7)
    assert A.create("si").si_copies == 5


def _grad_through(model, x, y, f):
    xr = x.clone().requires_grad_(True)
    return torch.autograd.grad(F.cross_entropy(model(f(xr)), y, reduction="sum"), xr)[0]


def test_golden_admix(tiny_resnet):
    """Wang et al. 2021: mean gradient over gamma_i (x + eta x'), 5 scales x 3 partners of other classes."""
    x, y = _batch(2, n=6)
    eps, eta = 0.05, 0.2
    g = torch.Generator().manual_seed(4)
    total = torch.zeros_like(x)
    for _ in range(3):
        partner = eta * x[other_class_partner(y, g)]
        for i in range(5):
            total += _grad_through(tiny_resnet, x, y, lambda t, p=partner, i=i: (t + p) / 2 ** i)
    expected = _step(x, x, total / 15, eps, eps)
    got = A.create("admix", eps=eps, steps=1, alpha=eps)(
        tiny_resnet, x, y, generator=torch.Generator().manual_seed(4)).x_adv
    assert torch.allclose(got, expected, atol=1e-7)


def test_admix_partners_come_from_other_classes():
    y = torch.tensor([0, 0, 1, 2, 2, 1])
    for seed in range(5):
        p = other_class_partner(y, torch.Generator().manual_seed(seed))
        assert (y[p] != y).all()
    assert (other_class_partner(torch.tensor([3, 3]), torch.Generator()) == torch.tensor([1, 0])).all()


def test_golden_vmi(tiny_resnet):
    """Wang & He 2021: g_{t+1} = mu g_t + (grad + v_t) / ||.||_1, v_{t+1} = mean_i grad(x_t + r_i) - grad,
    r_i ~ U[-beta eps, beta eps]."""
    x, y = _batch()
    eps, alpha, beta, n = 0.05, 0.02, 1.5, 3
    g = torch.Generator().manual_seed(9)

    def variance(point, grad):
        rs = [(torch.rand(point.shape, generator=g) * 2 - 1) * beta * eps for _ in range(n)]
        return sum(_grad(tiny_resnet, point + r, y) for r in rs) / n - grad

    g1 = _grad(tiny_resnet, x, y)
    m1 = _l1(g1)
    v1 = variance(x, g1)
    x1 = _step(x, x, m1, alpha, eps)
    g2 = _grad(tiny_resnet, x1, y)
    m2 = m1 + _l1(g2 + v1)
    x2 = _step(x, x1, m2, alpha, eps)
    got = A.create("vmi", eps=eps, steps=2, alpha=alpha, vt_neighbours=n)(
        tiny_resnet, x, y, generator=torch.Generator().manual_seed(9)).x_adv
    assert torch.allclose(got, x2, atol=1e-6)


class _StraightThroughReLU(torch.nn.Module):
    """relu forward, identity backward: the linear backward pass written independently of advkit's hooks."""

    def forward(self, u):
        return u + (u.clamp_min(0) - u).detach()


def _tiny_forward(net, x, relu_in_branch):  # noqa: ANN001 - the conftest TinyResNet
    """TinyResNet's forward written out, with ``relu_in_branch`` for b2's branch ReLU only: the ReLU after b2's
    addition stays the true one, as in the LinBP authors' ``block_func``."""
    z = net.b1(torch.relu(net.conv((x - 0.5) / 0.25)))
    b = net.b2
    pre = b.shortcut(z) + b.bn2(b.conv2(relu_in_branch(b.bn1(b.conv1(z)))))
    return net.fc(torch.relu(pre).mean((2, 3)))


def test_golden_linbp_without_renorm_is_the_straight_through_gradient(tiny_resnet):
    """Guo et al. 2020: from the chosen block on, the derivatives of the ReLUs inside residual branches are replaced
    by 1; the ReLU after the addition keeps its mask (the block calls one ``self.relu`` module for both)."""
    x, y = _batch()
    eps = 0.05
    xr = x.clone().requires_grad_(True)
    loss = F.cross_entropy(_tiny_forward(tiny_resnet.net, xr, _StraightThroughReLU()), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, xr)
    expected = _step(x, x, g, eps, eps)
    r = A.create("linbp", eps=eps, steps=1, alpha=eps, linbp_renorm=False)(tiny_resnet, x, y)
    assert torch.allclose(r.x_adv, expected, atol=1e-7)
    assert r.info["linbp"]["blocks"] == ["net.b2"] and r.info["linbp"]["relus"] == 1
    assert r.info["linbp"]["renorm_branch_passes"] == 0  # renorm off: no extra branch passes
    plain = A.create("ifgsm", eps=eps, steps=1, alpha=eps)(tiny_resnet, x, y).x_adv
    assert not torch.equal(plain, r.x_adv)


def test_linbp_keeps_the_relu_after_the_addition(tiny_resnet):
    """The defect of issue 26: linearising the post-addition call of the shared ``self.relu`` too gives another
    gradient; advkit's must differ from that one and say how many calls it left masked."""
    x, y = _batch()
    xr = x.clone().requires_grad_(True)
    net = tiny_resnet.net
    z = net.b1(torch.relu(net.conv((xr - 0.5) / 0.25)))
    b, st = net.b2, _StraightThroughReLU()
    wrong = net.fc(st(b.shortcut(z) + b.bn2(b.conv2(st(b.bn1(b.conv1(z)))))).mean((2, 3)))
    (g_wrong,) = torch.autograd.grad(F.cross_entropy(wrong, y, reduction="sum"), xr)
    eps = 0.05
    r = A.create("linbp", eps=eps, steps=1, alpha=eps, linbp_renorm=False)(tiny_resnet, x, y)
    assert not torch.allclose(r.x_adv, _step(x, x, g_wrong, eps, eps), atol=1e-7)
    assert r.info["linbp"]["hooks_fired"] == 1 and r.info["linbp"]["kept"] == 1


def test_golden_linbp_renormalises_the_branch(tiny_resnet):
    """The linear branch gradient is rescaled per sample to the L2 norm of the true branch gradient."""
    x, y = _batch()
    net = tiny_resnet.net
    st = _StraightThroughReLU()
    xr = x.clone().requires_grad_(True)
    z = net.b1(torch.relu(net.conv((xr - 0.5) / 0.25)))
    zd = z.detach().requires_grad_(True)
    b = net.b2
    branch_true = b.bn2(b.conv2(torch.relu(b.bn1(b.conv1(zd)))))
    branch_lin = b.bn2(b.conv2(st(b.bn1(b.conv1(zd)))))
    pre = b.shortcut(zd) + branch_lin
    loss = F.cross_entropy(net.fc(torch.relu(pre).mean((2, 3))), y, reduction="sum")
    (g_pre,) = torch.autograd.grad(loss, pre, retain_graph=True)
    (sc,) = torch.autograd.grad(b.shortcut(zd), zd, g_pre)
    (true,) = torch.autograd.grad(branch_true, zd, g_pre)
    (lin,) = torch.autograd.grad(branch_lin, zd, g_pre)
    s = true.flatten(1).norm(dim=1) / lin.flatten(1).norm(dim=1)
    g_z = sc + s.view(-1, 1, 1, 1) * lin
    (g_x,) = torch.autograd.grad(z, xr, g_z)
    eps = 0.05
    r = A.create("linbp", eps=eps, steps=1, alpha=eps)(tiny_resnet, x, y)
    assert torch.allclose(r.x_adv, _step(x, x, g_x, eps, eps), atol=1e-7)
    assert r.info["linbp"]["renorm_branch_passes"] == 2  # one linearised branch, one backward pass


def test_linbp_on_a_model_without_residual_blocks_is_an_error(lenet, lenet_batch):
    x, y = lenet_batch
    with pytest.raises(ValueError, match="LinBP needs residual blocks"):
        A.create("linbp", eps=0.1)(lenet, x[:2], y[:2])


def test_golden_ila(tiny_resnet):
    """Huang et al. 2019: from x, maximise (F(x'') - F(x)) . d / ||d||, d = F(x') - F(x), at the middle block."""
    x, y = _batch()
    eps = 0.05
    x1 = _step(x, x, _grad(tiny_resnet, x, y), eps, eps)  # the first stage: one I-FGSM step
    feats = {}
    h = tiny_resnet.net.b1.register_forward_hook(lambda m, i, o: feats.__setitem__("f", o))
    with torch.no_grad():
        tiny_resnet(x)
        f0 = feats["f"].flatten(1).clone()
        tiny_resnet(x1)
        d = feats["f"].flatten(1) - f0
    xr = x.clone().requires_grad_(True)
    tiny_resnet(xr)
    proj = ((feats["f"].flatten(1) - f0) * (d / d.norm(dim=1, keepdim=True))).sum()
    (g,) = torch.autograd.grad(proj, xr)
    h.remove()
    expected = _step(x, x, g, eps, eps)
    r = A.create("ila", eps=eps, steps=1, alpha=eps, ila_steps=1)(tiny_resnet, x, y)
    assert r.info["ila"]["layer"] == "net.b1"
    assert torch.allclose(r.x_adv, expected, atol=1e-7)
    with pytest.raises(ValueError, match="not a module"):
        A.create("ila", ila_layer="nope")(tiny_resnet, x, y)


def test_attack_batched_matches_per_batch_seeding(tiny_resnet):
    """One seeded generator per batch: the same examples however the calls are cut, passes summed."""
    x, y = _batch(3, n=10)
    atk = A.create("pgd+di", eps=0.1, steps=2)
    whole = A.attack_batched(atk, tiny_resnet, x, y, batch_size=4, seed=5)
    first = A.attack_batched(atk, tiny_resnet, x[:8], y[:8], batch_size=4, seed=5)
    last = A.attack_batched(atk, tiny_resnet, x[8:], y[8:], batch_size=4, seed=5, first_batch=2)
    assert torch.equal(whole.x_adv, torch.cat([first.x_adv, last.x_adv]))
    assert whole.forward_passes == 3 * 3 and whole.backward_passes == 3 * 2
    one = atk(tiny_resnet, x[4:8], y[4:8], generator=torch.Generator().manual_seed(A.batch_seed(5, 1)))
    assert torch.equal(whole.x_adv[4:8], one.x_adv)
    with pytest.raises(ValueError, match="batch_size"):
        A.attack_batched(atk, tiny_resnet, x, y, batch_size=0)


def test_noise_control_uses_the_full_budget_and_no_gradient(tiny_resnet):
    x, y = _batch()
    r = A.create("noise", eps=0.05)(tiny_resnet, x, y, generator=torch.Generator().manual_seed(0))
    d = (r.x_adv - x).abs()
    assert r.backward_passes == 0 and float(d.max()) <= 0.05 + 1e-7
    assert float((d > 0.05 - 1e-6).float().mean()) == 1.0  # x in [0.1, 0.9]: no clipping, every pixel moved
    r2 = A.create("noise", eps=0.2, norm="l2")(tiny_resnet, x, y)
    assert torch.allclose((r2.x_adv - x).flatten(1).norm(dim=1), torch.full((5,), 0.2), atol=1e-5)
