"""Issue 27: a defended model's robust accuracy through its own gradients and under BPDA / EOT (Athalye et al.,
ICML 2018), so that a defence which only hides its gradients is seen as such (``advkit.evaluate.defended``,
``advkit evaluate defended:... --robust``), and APGD's ``eot_iter``."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import advkit.attacks as A
from advkit.cli import app
from advkit.defences import wrap
from advkit.evaluate.defended import defence_robust_accuracy
from advkit.evaluate.robust import VERSIONS
from advkit.models import load


@pytest.fixture(scope="module")
def batch(fmnist_test):
    return fmnist_test.x[:12], fmnist_test.y[:12]


@pytest.fixture(scope="module")
def lenet():
    return load("lenet", dataset="fashion-mnist")


@pytest.fixture(scope="module")
def bit_depth_report(lenet, batch):
    # given with bpda=True: "plain" must still mean the defence's own gradients (bpda=False)
    return defence_robust_accuracy(wrap(lenet, "bit_depth", bits=4, bpda=True), *batch, eps=0.1, version="fast")


def test_bit_depth_is_seen_as_gradient_masking(lenet, batch, bit_depth_report):
    x, y = batch
    rep = bit_depth_report
    # rounding has derivative zero: APGD through it moves nothing; with BPDA the undefended lenet's gradient does
    assert rep.plain.accuracy >= rep.plain.clean_accuracy - 0.1
    assert rep.adaptive.accuracy <= 0.15
    assert rep.masked and rep.p_value < 0.01 and rep.only_adaptive >= 7
    assert "input_gradients" in [c.name for c in rep.checks if not c.ok]
    assert rep.robust <= min(rep.plain.robust, rep.adaptive.robust)  # the worst case over both
    assert "gradient masking" in rep.verdict() and "report the adaptive figure" in rep.verdict()
    # the adaptive model has the same forward pass: each example is judged on the model the user defended
    defended = wrap(lenet, "bit_depth", bits=4)
    broken = [i for i, b in enumerate(rep.adaptive.broken_by) if b not in (None, "clean")]
    with torch.no_grad():
        assert (defended(rep.adaptive.x_adv[broken]).argmax(1) != y[broken]).all()


def test_an_undefended_model_is_refused_with_how_to_defend_it(lenet, batch):
    with pytest.raises(ValueError, match=r"not a defended model.*advkit.defences.wrap"):
        defence_robust_accuracy(lenet, *batch, eps=0.1)


def test_rand_version_is_the_originals_eot_composition():
    assert VERSIONS["rand"] == (("apgd-ce", {"n_restarts": 1, "eot_iter": 20}),
                                ("apgd-dlr", {"n_restarts": 1, "eot_iter": 20}))


def test_eot_iter_spends_one_pass_per_sample_and_averages_the_gradient():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x, y = torch.rand(4, 1, 3, 4), torch.tensor([0, 1, 2, 0])
    one = A.create("apgd-ce", eps=0.1, n_iter=5)(net, x, y)
    four = A.create("apgd-ce", eps=0.1, n_iter=5, eot_iter=4)(net, x, y)
    assert four.backward_passes == 4 * one.backward_passes
    # a deterministic model: the mean of equal gradients is that gradient, so the iterates agree
    assert torch.allclose(four.x_adv, one.x_adv, atol=1e-6)
    with pytest.raises(ValueError, match="eot_iter"):
        A.create("apgd-ce", eps=0.1, eot_iter=0)


class _Alternating(nn.Module):
    """Logits ``s * W x`` with ``s`` = +1, -1, +1, ... on successive passes that take gradients (+1 without):
    two passes' gradients cancel exactly, so their EOT mean is zero."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(12, 3)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.requires_grad:
            return self.lin(x.flatten(1))
        self.calls += 1
        return (1.0 if self.calls % 2 else -1.0) * self.lin(x.flatten(1))


def test_eot_gradient_is_the_mean_over_the_passes():
    from advkit.attacks.gradient.apgd import _start

    torch.manual_seed(0)
    model = _Alternating()
    x = torch.rand(8, 1, 3, 4)
    with torch.no_grad():
        y = model.lin(x.flatten(1)).argmax(1)
    start = _start(x, 0.1, "linf", torch.Generator().manual_seed(0))
    out = {}
    for eot in (1, 2):
        model.calls = 0
        attack = A.create("apgd-ce", eps=0.1, n_iter=6, eot_iter=eot)
        out[eot] = attack(model, x, y, generator=torch.Generator().manual_seed(0)).x_adv
    assert torch.equal(out[2], start)  # the mean of opposite gradients is zero: sign(0) moves nothing
    assert not torch.equal(out[1], start)  # one pass per step: the iterates move


def test_cli_prints_both_figures_for_a_defended_model(tmp_path):
    r = CliRunner().invoke(app, ["evaluate", "defended:bit_depth[bits=4]:lenet", "--dataset", "fashion-mnist",
                                 "--robust", "--eps", "0.1", "--version", "fast", "--limit", "8",
                                 "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    assert "BPDA (identity backward pass)" in r.output and "gradient masking" in r.output
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "Robust accuracy (AutoAttack)" in report and "its gradients are masked" in report
