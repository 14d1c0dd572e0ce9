"""``skip_gradient`` (Wu et al., ICLR 2020, SGM), variant "formula": exact gradients, scoping, validation."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import standins as S
import torch
import torch.nn.functional as F
from torch import nn

from advkit import backprop, models


def input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, x)
    return g


def batch(channels: int = 3, size: int = 16, n: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


def zoo(name: str) -> nn.Module:
    torch.manual_seed(0)
    return S.init_bn(models.get_arch(name).build(1, 10, 12))


def hooks_left(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet20", "se_resnet20", "densenet_bc40", "inception_resnet",
                                  "mobilenet_v2"])
def test_gamma_one_is_bit_identical(name: str) -> None:
    model = zoo(name)
    x, y = batch(1, 12, 2)
    plain = input_grad(model, x, y)
    with backprop.skip_gradient(model, gamma=1.0) as found:
        g = input_grad(model, x, y)
    assert found and all(c.hooked and c.fired == 1 for c in found)
    assert torch.equal(g, plain)


def test_gamma_one_bit_identical_on_torchvision_standin() -> None:
    model = S.tv_resnet("bottleneck", (1, 2, 2, 1))
    x, y = batch()
    plain = input_grad(model, x, y)
    with backprop.skip_gradient(model, gamma=1):
        assert torch.equal(input_grad(model, x, y), plain)


class FunctionalSE(nn.Module):
    """SE gating written inline: the branch ends in ``out * gate``; only ``bn2`` carries the whole branch."""

    ref_gamma: float | None = None

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.fc1, self.fc2 = nn.Conv2d(c, 2, 1), nn.Conv2d(2, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(out, 1)))))
        branch = out * gate
        if self.ref_gamma is not None:
            branch = S.RefScale.apply(branch, self.ref_gamma)
        return F.relu(x + branch)


REFERENCE_MODELS: dict[str, Callable[[], nn.Module]] = {
    "inline SE gating": lambda: S.init_bn(S.Chain([FunctionalSE(4), FunctionalSE(4)], 4, 4)),
    "torchvision basic blocks, projection shortcuts": lambda: S.tv_resnet("basic", (2, 2, 1, 1)),
    "torchvision bottlenecks": lambda: S.tv_resnet("bottleneck", (1, 2, 1, 1)),
    "pre-activation blocks": S.preact_net,
    "scaled residuals": S.scaled_net,
    "dense net": S.tv_densenet,
    "timm SE blocks": lambda: S.timm_resnet(se=True, drop_path=0.1),
    "untraceable parts": S.untraceable_net,
}


@pytest.mark.parametrize("gamma", [0.2, 0.5])
@pytest.mark.parametrize("name", list(REFERENCE_MODELS))
def test_matches_hand_written_decay(name: str, gamma: float) -> None:
    """Input gradient == that of the same model with every branch output wrapped in a gradient-scaling function."""
    model = REFERENCE_MODELS[name]()
    x, y = batch()
    plain = input_grad(model, x, y)
    with backprop.skip_gradient(model, gamma=gamma) as found:
        g = input_grad(model, x, y)
    reference = input_grad(S.set_ref_gamma(model, gamma), x, y)
    S.set_ref_gamma(model, None)
    assert torch.allclose(g, reference, atol=1e-6, rtol=1e-5)
    scale = plain.abs().max()
    assert (g - plain).abs().max() > 1e-3 * scale  # the decay changes the gradient
    assert all(c.fired == 1 and c.scale == gamma for c in found)
    if name == "inline SE gating":
        assert [c.branch for c in found] == ["body.0.bn2", "body.1.bn2"]


def test_only_the_branch_is_scaled() -> None:
    """A single block ``x + f(x)``: d/dx = 1 + gamma * f'(x), checked against the formula directly."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.f = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.tanh(self.f(x))

    torch.manual_seed(0)
    block, x = Block(), torch.randn(4)
    jac_f = torch.autograd.functional.jacobian(lambda v: torch.tanh(block.f(v)), x)
    with backprop.skip_gradient(block, gamma=0.3) as found:
        jac = torch.autograd.functional.jacobian(block, x)
    assert found[0].branch == "f"
    assert torch.allclose(jac, torch.eye(4) + 0.3 * jac_f, atol=1e-6)


def test_hooks_removed_and_gradients_restored() -> None:
    model = S.tv_resnet("basic", (2, 2, 1, 1))
    clf = models.Classifier(model, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25], (3, 16, 16), 10)
    x, y = batch()
    plain = input_grad(clf, x, y)
    with backprop.skip_gradient(clf, gamma=0.2) as found:
        assert hooks_left(clf) == len(found) == 6
        assert not torch.allclose(input_grad(clf, x, y), plain)
    assert hooks_left(clf) == 0
    assert torch.equal(input_grad(clf, x, y), plain)


def test_hooks_removed_after_exception() -> None:
    model = S.tv_densenet()
    x, y = batch()
    plain = input_grad(model, x, y)
    with pytest.raises(RuntimeError, match="boom"), backprop.skip_gradient(model, gamma=0.5):
        input_grad(model, x, y)
        raise RuntimeError("boom")
    assert hooks_left(model) == 0
    assert torch.equal(input_grad(model, x, y), plain)
    with backprop.skip_gradient(model, gamma=0.5):  # usable again: the nesting guard was released
        pass


def test_fired_counts_backward_passes() -> None:
    model = S.timm_resnet(se=True)
    x, y = batch()
    with backprop.skip_gradient(model, gamma=0.2) as found:
        model(x.requires_grad_(True))  # forward only
        assert all(c.fired == 0 for c in found)
        with torch.no_grad():
            model(x)
        input_grad(model, x, y)
        input_grad(model, x, y)
    assert [c.fired for c in found] == [2] * 8
    assert "16 hook calls in backward passes" in backprop.format_connections(found)


def test_gamma_accepts_real_numbers() -> None:
    from fractions import Fraction

    with backprop.skip_gradient(S.preact_net(), gamma=Fraction(1, 5)) as found:
        pass
    assert found[0].scale == 0.2


def test_find_connections_results_not_mutated() -> None:
    model = S.preact_net()
    before = backprop.find_connections(model)
    with backprop.skip_gradient(model, gamma=0.2) as found:
        input_grad(model, *batch())
    assert all(c.fired == 1 for c in found) and all(c.fired == 0 and not c.hooked for c in before)


@pytest.mark.parametrize("gamma", [0, 0.0, -0.2, 1.5, float("nan"), float("inf"), True, "0.2", None])
def test_gamma_out_of_range(gamma: object) -> None:
    model = S.preact_net()
    with pytest.raises(ValueError, match=r"gamma must be a number in \(0, 1\]"):
        with backprop.skip_gradient(model, gamma=gamma):  # type: ignore[arg-type]
            pass
    assert hooks_left(model) == 0


def test_unknown_variant_and_no_skips() -> None:
    with pytest.raises(ValueError, match="variant"), backprop.skip_gradient(S.preact_net(), variant="paper"):
        pass
    lenet = models.get_arch("lenet").build(1, 10, 28)
    with pytest.raises(ValueError, match="no skip connections"), backprop.skip_gradient(lenet):
        pass
    assert hooks_left(lenet) == 0


def test_nesting_refused() -> None:
    model = S.tv_resnet("basic", (1, 1, 1, 1))
    clf = models.Classifier(model, [0.5] * 3, [0.25] * 3, (3, 16, 16), 10)
    x, y = batch()
    with backprop.skip_gradient(clf, gamma=0.5):
        inside = input_grad(clf, x, y)
        with pytest.raises(RuntimeError, match="already active"), backprop.skip_gradient(clf, gamma=0.5):
            pass
        with pytest.raises(RuntimeError, match="already active"), backprop.skip_gradient(model, gamma=0.5):
            pass
        assert torch.equal(input_grad(clf, x, y), inside)  # the outer hooks are intact
    assert hooks_left(clf) == 0


def test_scaling_hook_on_a_pass_through_module_scales_only_that_branch():
    """A branch module that returns its input (identity, drop-path in eval) must not scale the skip path too."""
    from advkit.backprop.scale import scaling_hook

    branch = torch.nn.Identity()
    handle = branch.register_forward_hook(scaling_hook(0.25, ()))
    try:
        x = torch.ones(3, requires_grad=True)
        (g,) = torch.autograd.grad((branch(x) + x).sum(), x)
    finally:
        handle.remove()
    assert torch.equal(g, torch.full((3,), 1.25))


def test_scaling_hook_before_inplace_shortcut_scales_the_branch_gradient():
    """torchvision blocks add the shortcut in place (``out += identity``) after the hooked module ran."""
    from advkit.backprop.scale import scaling_hook

    lin = torch.nn.Linear(3, 3)
    handle = lin.register_forward_hook(scaling_hook(0.5, ()))
    try:
        x = torch.randn(2, 3, requires_grad=True)
        out = lin(x)
        out += x
        (g,) = torch.autograd.grad(out.pow(2).sum(), x)
    finally:
        handle.remove()
    x2 = x.detach().requires_grad_(True)
    out2 = lin(x2) + x2
    go = 2 * out2.detach()
    assert torch.allclose(g, 0.5 * go @ lin.weight + go, atol=1e-6)
