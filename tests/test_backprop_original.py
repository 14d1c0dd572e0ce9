"""``skip_gradient(variant="original")``: the SGM authors' released code (Wu et al., ICLR 2020), quirks included.

The reference below re-states what csdongxian/skip-connections-matter ``utils_sgm.py`` does, with the same
old-style module backward hooks on ``nn.Sequential(Normalize, net)``; advkit must give the same gradients without
module backward hooks.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import standins as S
import torch
import torch.nn.functional as F
from torch import nn

from advkit import backprop, models
from advkit.models import Classifier, Normalize

MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]


def input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return g


def batch(n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)


@contextmanager
def authors_hooks(model: nn.Module, gamma: float, family: str) -> Iterator[None]:
    """The released code's hook registration, on a ``nn.Sequential(Normalize, net)`` model."""
    g = gamma ** 0.5 if family in ("bottleneck", "densenet") else gamma

    def decay(module: nn.Module, grad_in: tuple[torch.Tensor, ...], grad_out: object) -> tuple[torch.Tensor] | None:
        return (g * grad_in[0],) if isinstance(module, nn.ReLU) else None

    def normalise(module: nn.Module, grad_in: tuple[torch.Tensor, ...], grad_out: object) -> tuple[torch.Tensor]:
        return (grad_in[0] / torch.std(grad_in[0]),)

    handles = []
    for name, module in model.named_modules():
        if family == "densenet":
            if "relu" in name and "transition" not in name:
                handles.append(module.register_backward_hook(decay))
            continue
        if "relu" in name and "0.relu" not in name:
            handles.append(module.register_backward_hook(decay))
        if len(name.split(".")) >= 2 and "layer" in name.split(".")[-2]:
            handles.append(module.register_backward_hook(normalise))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for h in handles:
            h.remove()


CASES = {
    "resnet-34-like": (lambda: S.tv_resnet("basic", (2, 2, 11, 2)), "basic"),
    "resnet-152-like": (lambda: S.tv_resnet("bottleneck", (1, 1, 12, 1)), "bottleneck"),
    "densenet": (S.tv_densenet, "densenet"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_authors_code(case: str) -> None:
    build, family = CASES[case]
    net = build()
    x, y = batch()
    clf = Classifier(net, MEAN, STD, (3, 16, 16), 10)
    plain = input_grad(clf, x, y)
    with backprop.skip_gradient(clf, gamma=0.2, variant="original") as found:
        ours = input_grad(clf, x, y)
    authors = nn.Sequential(Normalize(MEAN, STD), net)
    with authors_hooks(authors, 0.2, family):
        reference = input_grad(authors, x, y)
    assert torch.allclose(ours, reference, rtol=1e-5, atol=1e-6 * reference.abs().max().item())
    assert not torch.allclose(ours / ours.norm(), plain / plain.norm(), atol=1e-3)
    expected_scale = 0.2 if family == "basic" else 0.2 ** 0.5
    assert all(c.scale == pytest.approx(expected_scale) for c in found if c.hooked)
    assert all(c.fired > 0 for c in found if c.hooked)


def test_original_on_the_authors_own_wrapper() -> None:
    net = S.tv_resnet("bottleneck", (1, 1, 12, 1))
    model = nn.Sequential(Normalize(MEAN, STD), net)
    x, y = batch()
    with backprop.skip_gradient(model, gamma=0.2, variant="original"):
        ours = input_grad(model, x, y)
    with authors_hooks(model, 0.2, "bottleneck"):
        reference = input_grad(model, x, y)
    assert torch.allclose(ours, reference, rtol=1e-5, atol=1e-6 * reference.abs().max().item())


@pytest.mark.parametrize("wrap", [False, True])
def test_skips_exactly_the_blocks_the_name_rule_skips(wrap: bool) -> None:
    """'0.relu' skips the first block of each stage *and* layer3.10 (ResNet-101/152 quirk)."""
    net = S.tv_resnet("bottleneck", (1, 1, 12, 1))
    model: nn.Module = Classifier(net, MEAN, STD, (3, 16, 16), 10) if wrap else net
    p = "net." if wrap else ""
    with backprop.skip_gradient(model, gamma=0.2, variant="original") as found:
        input_grad(model, *batch())
    blocks = {c.block: c for c in found if c.kind == "residual"}
    assert len(blocks) == 15
    skipped = {b for b, c in blocks.items() if not c.hooked}
    assert skipped == {f"{p}layer1.0", f"{p}layer2.0", f"{p}layer3.0", f"{p}layer3.10", f"{p}layer4.0"}
    assert blocks[f"{p}layer3.11"].branch == f"{p}layer3.11.relu" and blocks[f"{p}layer3.11"].fired == 3
    assert "1.layer3.10.relu" in blocks[f"{p}layer3.10"].detail
    others = [c for c in found if c.kind == "other"]
    assert [c.branch for c in others] == [f"{p}relu"]  # the stem ReLU matches too: a uniform rescale


def test_densenet_rule() -> None:
    with backprop.skip_gradient(S.tv_densenet(), gamma=0.5, variant="original") as found:
        input_grad(S.tv_densenet(), *batch())
    dense = [c for c in found if c.kind == "dense"]
    assert len(dense) == 5 and all(c.branch.endswith("relu1, " + c.block + ".relu2") for c in dense)
    assert all("transition" not in c.branch for c in found)


@pytest.mark.parametrize("name", ["timm", "zoo"])
def test_no_relu_named_modules_is_an_error(name: str) -> None:
    """The authors' code silently runs the base attack on timm ResNets (act1/act2); advkit refuses."""
    model = S.timm_resnet(se=True) if name == "timm" else models.get_arch("preact_resnet20").build(3, 10, 16)
    msg = "no module .* matches.*variant='formula'" if name == "timm" else "variant='formula'"
    with pytest.raises(ValueError, match=msg):
        with backprop.skip_gradient(model, gamma=0.2, variant="original"):
            pass
    assert all(not m._forward_hooks for m in model.modules())


def test_rule_that_decays_no_block_is_an_error() -> None:
    """One block per stage: '0.relu' skips every block, only the stem ReLU matches (a uniform rescale)."""
    with pytest.raises(ValueError, match="none inside a ResNet block"):
        with backprop.skip_gradient(S.tv_resnet("basic", (1, 1, 1, 1)), gamma=0.2, variant="original"):
            pass


def test_gamma_one_installs_nothing() -> None:
    net = S.tv_resnet("basic", (2, 1, 1, 1))
    x, y = batch()
    plain = input_grad(net, x, y)
    with backprop.skip_gradient(net, gamma=1.0, variant="original") as found:
        assert torch.equal(input_grad(net, x, y), plain)
    assert found and not any(c.hooked for c in found)


def test_hooks_removed_after_exception() -> None:
    net = S.tv_resnet("bottleneck", (2, 1, 1, 1))
    x, y = batch()
    plain = input_grad(net, x, y)
    with pytest.raises(KeyError), backprop.skip_gradient(net, gamma=0.2, variant="original"):
        input_grad(net, x, y)
        raise KeyError("boom")
    assert all(not m._forward_hooks for m in net.modules())
    assert torch.equal(input_grad(net, x, y), plain)


# The zoo's post-activation ResNets and DenseNet name their ReLU modules as torchvision does (a shared ``relu`` per
# block; ``relu1``/``relu2`` per dense layer; ``transition1``), so the authors' rule applies to them. The others use
# functional or unnamed activations, where the rule matches nothing and advkit refuses instead of degrading.
ORIGINAL_APPLIES = {"resnet20", "resnet56", "resnet110", "resnet29_bottleneck", "resnext29_4x8d", "se_resnet20",
                    "densenet_bc40"}


@pytest.mark.parametrize("name", models.arch_names())
def test_original_variant_on_the_zoo(name: str) -> None:
    net = models.get_arch(name).build(1, 10, 28)
    if name not in ORIGINAL_APPLIES:
        with pytest.raises(ValueError, match="variant='original'"):
            with backprop.skip_gradient(net, gamma=0.2, variant="original"):
                pass
        return
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    with backprop.skip_gradient(net, gamma=0.5, variant="original") as found:
        torch.autograd.grad(net(x).sum(), x)
    hooked = [c for c in found if c.kind in ("residual", "dense") and c.hooked]
    assert hooked and all(c.fired > 0 for c in hooked)
    # the first block of each stage ('...0.relu') is skipped, as in the authors' code
    assert not any(c.block.endswith(("layer1.0", "layer2.0", "layer3.0")) for c in hooked)
