"""Structural discovery of skip connections (Wu et al., ICLR 2020, SGM): counts per architecture and stand-in."""

from __future__ import annotations

import pytest
import standins as S
import torch
from torch import nn

from advkit import backprop, models
from advkit.backprop.connection import Connection

# residual (or dense) connections and projection shortcuts per zoo architecture; None: no skip connection
EXPECTED: dict[str, tuple[str, int, int] | None] = {
    "linear": None, "maxout": None, "mlp": None, "lenet": None, "lenet5": None, "vgg11_bn": None, "inception": None,
    "resnet20": ("residual", 9, 2), "resnet56": ("residual", 27, 2), "resnet110": ("residual", 54, 2),
    "resnet29_bottleneck": ("residual", 9, 3), "preact_resnet20": ("residual", 9, 2),
    "wrn16_2": ("residual", 6, 3), "resnext29_4x8d": ("residual", 9, 3), "se_resnet20": ("residual", 9, 2),
    "densenet_bc40": ("dense", 18, 0), "inception_resnet": ("residual", 6, 0),
    "mobilenet_v2": ("residual", 10, 0),  # the stride-1 blocks whose width does not change
}


@pytest.mark.parametrize("name", models.arch_names())
def test_zoo_counts(name: str) -> None:
    assert name in EXPECTED, f"new architecture {name!r}: add its expected skip connections to EXPECTED"
    net = models.get_arch(name).build(1, 10, 28)
    want = EXPECTED[name]
    if want is None:
        assert models.get_arch(name).connections == "none"
        with pytest.raises(ValueError, match="no skip connections"):
            backprop.find_connections(net)
        return
    kind, n, n_proj = want
    found = backprop.find_connections(net)
    assert models.get_arch(name).connections == kind
    assert [c.kind for c in found] == [kind] * n
    assert sum(c.shortcut == "projection" for c in found) == n_proj
    assert all(c.found_by == "fx" and not c.hooked and c.fired == 0 for c in found)
    assert len({c.branch for c in found}) == n  # one hooked module per connection
    modules = dict(net.named_modules())
    assert all(c.branch in modules and c.block in modules for c in found)


def test_zoo_branch_modules() -> None:
    """The hooked module is the end of the branch: bn2, the SE module, the conv Sequential, the up conv."""
    expect = {"resnet20": "bn2", "resnet29_bottleneck": "bn3", "preact_resnet20": "conv2", "se_resnet20": "se",
              "mobilenet_v2": "conv", "inception_resnet": "up", "densenet_bc40": "conv2"}
    for name, leaf in expect.items():
        found = backprop.find_connections(models.get_arch(name).build(1, 10, 28))
        assert {c.branch.rpartition(".")[2] for c in found} == {leaf}, name
    found = backprop.find_connections(models.get_arch("inception_resnet").build(1, 10, 28))
    assert all("0.2" in c.detail for c in found)


def test_mobilenet_counts_match_blocks() -> None:
    net = models.get_arch("mobilenet_v2").build(1, 10, 28)
    blocks = [n for n, m in net.named_modules() if getattr(m, "use_residual", False)]
    assert [c.block for c in backprop.find_connections(net)] == blocks


def test_classifier_names_and_model_untouched() -> None:
    net = models.get_arch("resnet20").build(1, 10, 28)
    clf = models.Classifier(net, [0.5], [0.25], (1, 28, 28), 10)
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    found = backprop.find_connections(clf)
    assert len(found) == 9 and all(c.branch.startswith("net.layer") for c in found)
    assert found[0].block == "net.layer1.0" and found[0].branch == "net.layer1.0.bn2"
    assert all(not m._forward_hooks for m in clf.modules())
    assert all(torch.equal(v, clf.state_dict()[k]) for k, v in before.items())


def test_torchvision_resnet_standins() -> None:
    found = backprop.find_connections(S.tv_resnet("basic", (2, 2, 2, 2)))
    assert len(found) == 8 and sum(c.shortcut == "projection" for c in found) == 3
    assert found[2].block == "layer2.0" and found[2].branch == "layer2.0.bn2" and found[2].shortcut == "projection"
    deep = backprop.find_connections(S.tv_resnet("bottleneck", (1, 1, 12, 1)))
    assert len(deep) == 15 and sum(c.shortcut == "projection" for c in deep) == 4
    assert "layer3.10" in [c.block for c in deep]
    assert {c.branch.rpartition(".")[2] for c in deep} == {"bn3"}


def test_torchvision_densenet_standin() -> None:
    found = backprop.find_connections(S.tv_densenet(block_config=(3, 2)))
    assert [c.kind for c in found] == ["dense"] * 5
    assert found[0].branch == "features.denseblock1.denselayer1"
    assert found[0].block == "features.denseblock1"
    assert found[-1].branch == "features.denseblock2.denselayer2"
    assert all("transition" not in c.branch for c in found)


@pytest.mark.parametrize("se", [False, True])
def test_timm_resnet_standin(se: bool) -> None:
    found = backprop.find_connections(S.timm_resnet(se=se, drop_path=0.1))
    assert len(found) == 8 and sum(c.shortcut == "projection" for c in found) == 3
    assert {c.branch.rpartition(".")[2] for c in found} == {"se" if se else "bn2"}


def test_stochastic_depth_in_training_mode() -> None:
    """In training mode DropPath multiplies the branch by a mask: the drop-path module itself is hooked."""
    found = backprop.find_connections(S.timm_resnet(se=True, drop_path=0.1).train())
    assert len(found) == 8 and {c.branch.rpartition(".")[2] for c in found} == {"drop_path"}


def test_preact_and_scaled_standins() -> None:
    found = backprop.find_connections(S.preact_net())
    assert [c.shortcut for c in found] == ["identity", "projection", "identity"]
    assert [c.branch for c in found] == ["body.0.conv2", "body.1.conv2", "body.2.conv2"]
    found = backprop.find_connections(S.scaled_net())
    assert [c.branch for c in found] == ["body.0.up", "body.1.up"]


def test_untraceable_model_falls_back() -> None:
    """Root not traceable -> children traced; untraceable gate -> fx leaf; untraceable block -> block rule."""
    found = backprop.find_connections(S.untraceable_net())
    assert [(c.block, c.branch, c.found_by) for c in found] == [
        ("body.0", "body.0.bn2", "rule"), ("body.1", "body.1.gate", "fx"), ("body.2", "body.2.bn2", "fx")]


def test_user_model_without_skips_raises() -> None:
    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 1)
            self.bias = nn.Parameter(torch.zeros(1, 4, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.a(x) + self.bias  # adding a parameter is not a skip connection
            z = self.b(y)
            return torch.cat([z, self.c(z)], 0)  # nor is a concatenation along the batch

    with pytest.raises(ValueError, match="no skip connections.*silently reduce to the base attack"):
        backprop.find_connections(Plain())


def test_format_connections() -> None:
    found = backprop.find_connections(models.get_arch("resnet20").build(1, 10, 28))
    text = backprop.format_connections(found)
    assert "layer2.0.bn2" in text and "projection" in text
    assert text.splitlines()[-1].startswith("9 residual (2 with projection shortcuts), 0 dense; 0 hooked")
    with pytest.raises(ValueError):
        Connection("skip", "a", "a.b", "identity")


def test_addition_forms() -> None:
    """``torch.add``, in-place ``Tensor.add_`` and ``Tensor.add`` are residual additions too."""

    class AddForms(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.f1, self.f2, self.f3 = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.add(x, self.f1(x))
            z = self.f2(y)
            z.add_(y)
            return z.add(torch.relu(self.f3(z)))

    model = AddForms()
    assert [c.branch for c in backprop.find_connections(model)] == ["f1", "f2", "f3"]
    x = torch.randn(2, 4, requires_grad=True)
    with backprop.skip_gradient(model, gamma=0.5) as found:
        torch.autograd.grad(model(x).sum(), x)
    assert [c.fired for c in found] == [1, 1, 1]


def test_branch_module_that_also_feeds_elsewhere_is_not_hooked(caplog: pytest.LogCaptureFixture) -> None:
    """``x + tanh(a(x))`` where ``a(x)`` also feeds a head: hooking ``a`` would scale the head's gradient too."""

    class Tricky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.f, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.a(x)
            y = x + torch.tanh(h)
            z = y + torch.tanh(self.f(y))
            return torch.stack([z, self.head(h)]).sum(0)

    with caplog.at_level("WARNING", logger="advkit.backprop"):
        found = backprop.find_connections(Tricky())
    assert [c.branch for c in found] == ["f"]
    assert "no module produces the branch alone" in caplog.text


def test_discovery_is_cached_until_the_structure_changes(monkeypatch):
    """Attacks enter skip_gradient on every call: discovery runs once per model, again after a module swap."""
    from advkit.backprop import discover
    from advkit.models import Classifier, get_arch

    model = Classifier(get_arch("resnet20").build(1, 10, 28), (0.5,), (0.5,), (1, 28, 28), 10)
    calls = []
    real = discover._discover
    monkeypatch.setattr(discover, "_discover", lambda m, p: calls.append(1) or real(m, p))
    first = discover.find_connections(model)
    first[0].fired = 7  # callers get copies: mutating one does not leak into the cache
    again = discover.find_connections(model)
    assert len(calls) == 1 and again[0].fired == 0 and [c.branch for c in again] == [c.branch for c in first]
    block = model.get_submodule(first[0].block)
    block.bn2 = torch.nn.BatchNorm2d(block.bn2.num_features)
    discover.find_connections(model)
    assert len(calls) == 2
