"""Tests that kill the surviving mutants of the mutation run on attacks/jsma.py and backprop/
(benchmarks/results/mutation_issue23.md)."""

from __future__ import annotations

import pytest
import torch
from i23_reference import _batch, _linf_step
from torch import nn

import advkit.attacks as A


# ========================================================= mutation run: survivors in jsma.py, backprop/ (group 2)
class _Linear2(nn.Module):
    """Two classes on 1x2x4 inputs: logit_1 = s, logit_0 = -s with s = c - w . x (JSMA's saliency is +-w)."""

    num_classes = 2

    def __init__(self, w: list[float], c: float) -> None:
        super().__init__()
        self.w = torch.tensor(w)
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.c - x.flatten(1) @ self.w
        return torch.stack([-s, s], 1)


def _jsma(**kw):
    from advkit.attacks.saliency.jsma import JSMA

    return JSMA(output="logits", **kw)


def test_jsma_settings_are_checked():
    from advkit.attacks.saliency.jsma import JSMA

    for kw, match in [({"theta": True}, "theta"), ({"theta": float("nan")}, "theta"), ({"theta": "1"}, "theta"),
                      ({"upsilon": True}, "upsilon"), ({"batch_size": True}, "batch_size"),
                      ({"max_memory_bytes": 2.5}, "max_memory_bytes")]:
        with pytest.raises(ValueError, match=match):
            JSMA(**kw)


def test_all_targets_keeps_the_label_dtype():
    from advkit.attacks.saliency.jsma import all_targets

    rows, t = all_targets(torch.tensor([2, 0], dtype=torch.int32), 3)
    assert t.dtype == torch.int32 and t.tolist() == [0, 1, 1, 2] and rows.tolist() == [0, 0, 1, 1]


def test_jsma_plans_every_search_under_its_own_cap_and_variant(monkeypatch):
    import advkit.attacks.saliency.jsma as jsma_module
    from advkit.attacks.saliency.search import plan_search

    calls: list[tuple[object, object]] = []

    def recorded(batch, n, dtype, cap, pairs=True):
        calls.append((cap, pairs))
        return plan_search(batch, n, dtype, cap, pairs)

    monkeypatch.setattr(jsma_module, "plan_search", recorded)
    model = _Linear2([-0.1] * 8, -100.0)  # never reaches class 1: every iteration plans
    x = torch.zeros(3, 1, 2, 4)
    for pairs in (True, False):
        calls.clear()
        atk = _jsma(pairs=pairs, upsilon=0.5, max_memory_bytes=123_456)
        atk(model, x, torch.zeros(3, dtype=torch.long), target=torch.ones(3, dtype=torch.long))
        assert calls and set(calls) == {(123_456, pairs)}
        assert atk.estimate_memory(3, 8) == plan_search(3, 8, torch.float32, 123_456, pairs).peak_bytes
    assert _jsma(pairs=False).estimate_memory(64, 784) < _jsma(pairs=True).estimate_memory(64, 784)


def test_jsma_iteration_cap_scales_with_one_over_theta():
    """theta = 0.5 needs two moves to saturate a feature: ceil(1 / theta) * floor(D * Upsilon / 2) pair iterations
    (two backward passes each) when the target is out of reach, and the budget holds."""
    model = _Linear2([-0.1] * 8, -100.0)  # class 1 is out of reach
    x = torch.zeros(1, 1, 2, 4)
    r = _jsma(theta=0.5, upsilon=0.5)(model, x, torch.tensor([0]), target=torch.tensor([1]))
    assert not bool(r.success[0])
    assert r.backward_passes == 2 * 2 * 2 and r.forward_passes == 4 + 1
    assert int((r.x_adv != x).sum()) == 4 and set(r.x_adv.flatten().tolist()) == {0.0, 1.0}


def test_jsma_decreasing_features_skips_zeros_and_clips_at_zero():
    """theta = -1: features already at 0 are outside the search domain (although the most salient), moved
    features stop at 0, and the model sees them there: success needs the second pair."""
    w = [10.0, 10.0, 5.0, 5.0, 1.0, 1.0, 0.1, 0.1]
    model = _Linear2(w, 1.0)  # class 1 once w . x < 1
    x = torch.tensor([0.0, 0.0, 0.9, 0.9, 0.9, 0.9, 0.5, 0.5]).view(1, 1, 2, 4)
    r = _jsma(theta=-1.0, upsilon=0.5)(model, x, torch.tensor([0]), target=torch.tensor([1]))
    assert bool(r.success[0])
    assert r.x_adv.flatten().tolist() == pytest.approx([0, 0, 0, 0, 0, 0, 0.5, 0.5])


def test_jsma_keeps_a_success_that_modifies_every_feature_and_returns_unfooled_samples_unchanged():
    """Upsilon = 1 on D = 4: the only success moves all four features (two pair iterations), both targeted and
    untargeted; a sample no target can fool comes back as it was."""
    model = _Linear2([-1.0] * 4, -3.5)  # class 1 once the four features sum above 3.5
    x = torch.zeros(1, 1, 2, 2)
    y = torch.tensor([0])
    for target in (torch.tensor([1]), None):
        r = _jsma(upsilon=1.0)(model, x, y, target=target)
        assert bool(r.success[0]) and r.x_adv.flatten().tolist() == [1.0] * 4
    hopeless = _Linear2([-0.01] * 8, -100.0)
    x = torch.linspace(0.4, 0.1, 4).view(4, 1, 1, 1).expand(4, 1, 2, 4).contiguous()  # four different samples
    r = _jsma(upsilon=0.5)(hopeless, x, torch.zeros(4, dtype=torch.long))  # the attempts differ per sample
    assert not bool(r.success.any()) and torch.equal(r.x_adv, x)


class _NoK(nn.Module):
    """The same model without a ``num_classes`` attribute."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_untargeted_jsma_costs_the_targeted_runs_plus_one_check_per_batch():
    from advkit.attacks.saliency.jsma import all_targets
    from tests.test_jsma import tiny_model

    model = tiny_model(seed=4, c=1, side=6, k=4)
    x = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    atk = _jsma(upsilon=0.3, batch_size=128)
    u = atk(model, x, y)
    rows, t = all_targets(y, 4)
    per = atk(model, x[rows], y[rows], target=t)
    assert (u.forward_passes, u.backward_passes) == (per.forward_passes + 1, per.backward_passes)
    probed = atk(_NoK(model), x, y)  # without num_classes: one forward pass tells the number of classes
    assert torch.equal(probed.x_adv, u.x_adv) and probed.forward_passes == u.forward_passes + 1
    # targeted batches: the attack over 2 batches is the attacks over each, with one final check
    two = _jsma(upsilon=0.3, batch_size=5)(model, x[rows], y[rows], target=t)
    a = _jsma(upsilon=0.3)(model, x[rows][:5], y[rows][:5], target=t[:5])
    b = _jsma(upsilon=0.3)(model, x[rows][5:], y[rows][5:], target=t[5:])
    assert torch.equal(two.x_adv, torch.cat([a.x_adv, b.x_adv]))
    assert two.forward_passes == a.forward_passes + b.forward_passes - 1


def test_scale_grad_counts_each_backward_pass():
    from advkit.backprop.connection import Connection
    from advkit.backprop.scale import scale_grad, scaling_hook

    c = Connection(kind="residual", block="", branch="b", shortcut="identity")
    x = torch.ones(3, requires_grad=True)
    (g,) = torch.autograd.grad(scale_grad(x, 0.25, (c,)).sum(), x)
    assert torch.equal(g, torch.full((3,), 0.25)) and c.fired == 1
    torch.autograd.grad(scale_grad(x, 0.25, (c,)).sum(), x)
    assert c.fired == 2
    # a hooked pass-through module scales a copy, and counts on its connection too
    branch = nn.Identity()
    handle = branch.register_forward_hook(scaling_hook(0.5, (c,)))
    try:
        (g,) = torch.autograd.grad((branch(x) + x).sum(), x)
        with torch.enable_grad():
            out = branch(torch.ones(3))  # an input that needs no gradient: left alone
    finally:
        handle.remove()
    assert torch.equal(g, torch.full((3,), 1.5)) and c.fired == 3 and not out.requires_grad


def test_sgm_context_leaves_forward_passes_without_gradients_alone(tiny_resnet):
    import advkit.backprop as backprop

    x, _ = _batch()
    with backprop.skip_gradient(tiny_resnet, gamma=0.5) as found, torch.enable_grad():
        out = tiny_resnet(x)  # frozen parameters, input without gradient: nothing to hook
    assert not out.requires_grad and all(c.fired == 0 for c in found)


def test_linbp_counts_its_renormalisation_passes_over_steps(tiny_resnet):
    x, y = _batch()
    r = A.create("linbp", eps=0.05, steps=3)(tiny_resnet, x, y)
    assert r.info["linbp"]["renorm_branch_passes"] == 2 * 3  # one linearised branch, three backward passes


def test_linbp_is_linear_in_a_fresh_thread(tiny_resnet):
    """The linear/normal switch is thread-local: a thread that never re-normalised must still be linear."""
    import threading

    import torch.nn.functional as F

    from tests.test_parts import _StraightThroughReLU, _tiny_forward

    x, y = _batch()
    eps = 0.05
    xr = x.clone().requires_grad_(True)  # the authors' rule: b2's branch ReLU linear, the post-addition one not
    loss = F.cross_entropy(_tiny_forward(tiny_resnet.net, xr, _StraightThroughReLU()), y, reduction="sum")
    expected = _linf_step(x, x, torch.autograd.grad(loss, xr)[0], eps, eps)
    out: list[torch.Tensor] = []
    t = threading.Thread(target=lambda: out.append(
        A.create("linbp", eps=eps, steps=1, alpha=eps, linbp_renorm=False)(tiny_resnet, x, y).x_adv))
    t.start()
    t.join()
    assert out and torch.allclose(out[0], expected, atol=1e-7)


