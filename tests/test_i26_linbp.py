"""Issue 26: LinBP follows its authors' rule on torchvision's block structures.

Guo et al.'s released code (and TransferAttack's ``linbp.py``, which follows it) linearises the ReLUs inside each
residual branch from the chosen block on and keeps the true ReLU after the addition of branch and shortcut.
torchvision's ``BasicBlock`` and ``Bottleneck`` call one ``self.relu`` module for both, so a rule that hooks the
module linearises the post-addition ReLU too (advkit's behaviour before issue 26). The references below are written
out block by block, independently of advkit's hooks.
"""

from __future__ import annotations

import types

import pytest
import standins as S
import torch
import torch.nn.functional as F
from torch import nn

import advkit.attacks as A
from advkit.backprop import find_connections
from advkit.backprop.linbp import linear_backprop
from advkit.models import Classifier


class _StraightThrough(nn.Module):
    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return u + (u.clamp_min(0) - u).detach()


def _authors_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The authors' ``block_func`` for either block type: straight-through ReLUs in the branch, the true one after
    the addition."""
    st = _StraightThrough()
    out = st(block.bn1(block.conv1(x)))
    if hasattr(block, "conv3"):
        out = block.bn3(block.conv3(st(block.bn2(block.conv2(out)))))
    else:
        out = block.bn2(block.conv2(out))
    identity = block.downsample(x) if block.downsample is not None else x
    return torch.relu(out + identity)


def _model(kind: str) -> Classifier:
    torch.manual_seed(0)
    net = S.tv_resnet(kind, (1, 2, 2, 1), width=4, in_channels=1)
    return Classifier(net, (0.5,), (0.25,), (1, 16, 16), 10, name=f"tv-{kind}").freeze()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.rand(4, 1, 16, 16, generator=g) * 0.8 + 0.1, torch.randint(0, 10, (4,), generator=g)


def _reference_gradient(model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The input gradient with the authors' rule from LinBP's ``auto`` block on (renormalisation off)."""
    import copy

    ref = copy.deepcopy(model)
    blocks = list(dict.fromkeys(c.block for c in find_connections(ref) if c.kind == "residual" and c.block))
    for name in blocks[len(blocks) // 2:]:
        block = ref.get_submodule(name)
        block.forward = types.MethodType(_authors_forward, block)
    xr = x.clone().requires_grad_(True)
    return torch.autograd.grad(F.cross_entropy(ref(xr), y, reduction="sum"), xr)[0]


@pytest.mark.parametrize("kind", ["basic", "bottleneck"])
def test_linbp_gradient_is_the_authors_rule_on_torchvision_blocks(kind: str) -> None:
    model = _model(kind)
    x, y = _batch()
    expected = _reference_gradient(model, x, y)
    xr = x.clone().requires_grad_(True)
    with linear_backprop(model, renorm=False) as found:
        (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
    torch.testing.assert_close(g, expected, rtol=1e-5, atol=1e-7)
    relus_per_branch = 2 if kind == "bottleneck" else 1
    assert found.fired == relus_per_branch * len(found.blocks)  # the branch calls of the shared self.relu
    assert found.kept == len(found.blocks)  # one post-addition call per chosen block, left masked
    assert found.unsplit == ()


def test_linbp_renormalised_gradient_is_the_same_when_parameters_need_gradients() -> None:
    """Without parameter gradients the branch is traversed twice (the rescaled linear gradient goes straight to the
    block input); with them, three times. Both give the same input gradient."""
    model = _model("bottleneck")
    x, y = _batch()

    def grad(found_passes: list[int]) -> torch.Tensor:
        xr = x.clone().requires_grad_(True)
        with linear_backprop(model) as found:
            (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
        found_passes.append(found.renorm_passes)
        return g

    passes: list[int] = []
    fast = grad(passes)
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        through = grad(passes)
    finally:
        for p in model.parameters():
            p.requires_grad_(False)
    torch.testing.assert_close(fast, through, rtol=1e-5, atol=1e-7)
    assert passes[0] == passes[1] == 3 * 2  # three chosen blocks (of six), two passes each


def test_linbp_on_the_zoo_block_keeps_the_post_addition_relu() -> None:
    """The zoo's BasicBlock (``models/zoo/resnet.py``) reuses ``self.relu`` after the addition too."""
    from advkit.models.zoo.resnet import BasicBlock

    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), BasicBlock(8, 8), BasicBlock(8, 16, stride=2),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    model = Classifier(net, (0.5,), (0.25,), (1, 12, 12), 10, name="zoo-blocks").freeze()
    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([1, 2, 3])
    r = A.create("linbp+mi", eps=0.1, steps=2)(model, x, y)
    assert r.info["linbp"]["kept"] == 2 and r.info["linbp"]["hooks_fired"] == 2  # one block, two passes each
