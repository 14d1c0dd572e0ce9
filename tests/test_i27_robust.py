"""Issue 27: robust accuracy under the AutoAttack composition (``advkit.evaluate.robust_accuracy``, ``advkit
evaluate --robust``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import advkit.attacks as A
from advkit.cli import app
from advkit.evaluate import robust_accuracy
from advkit.evaluate.robust import VERSIONS
from advkit.models import load
from advkit.train.adversarial import robust_accuracy as pgd_robust_accuracy


@pytest.fixture(scope="module")
def robust_batch(fmnist_test):
    return fmnist_test.x[:48], fmnist_test.y[:48]


@pytest.fixture(scope="module")
def lenet_pgd():
    return load("lenet_pgd", dataset="fashion-mnist")


def test_fast_version_is_no_weaker_than_pgd_and_runs_each_attack_on_the_points_left(lenet_pgd, robust_batch):
    x, y = robust_batch
    rep = robust_accuracy(lenet_pgd, x, y, eps=0.1, version="fast")
    pgd = pgd_robust_accuracy(lenet_pgd, x, y, 0.1, steps=20)
    assert rep.robust <= pgd["correct"]  # the composition's worst case is at most PGD-20's robust accuracy
    assert [r.attack for r in rep.rows] == ["apgd-ce", "apgd-t"]
    assert rep.rows[0].attempted == rep.clean
    assert rep.rows[1].attempted == rep.rows[0].robust_after  # APGD-T only on the points APGD-CE left
    assert rep.rows[-1].robust_after == rep.robust
    assert sum(r.broken for r in rep.rows) == rep.clean - rep.robust
    assert rep.broken_by.count("clean") == rep.n - rep.clean
    broken = [i for i, b in enumerate(rep.broken_by) if b not in (None, "clean")]
    assert rep.x_adv is not None
    d = (rep.x_adv - x).flatten(1).abs().amax(1)
    assert float(d.max()) <= 0.1 + 1e-6
    with torch.no_grad():
        pred = lenet_pgd(rep.x_adv).argmax(1)
    assert all(int(pred[i]) != int(y[i]) for i in broken)  # every point counted as broken is misclassified
    lo, hi = rep.interval
    assert lo <= rep.accuracy <= hi
    assert "robust accuracy after APGD-T" in rep.table()


def test_the_standard_version_is_the_original_four_in_order():
    assert [name for name, _ in VERSIONS["standard"]] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    for name, kw in VERSIONS["standard"]:
        A.create(name, eps=0.1, **kw)  # every member is registered and takes the original's settings


class _Softmax(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).softmax(1)


@pytest.mark.parametrize("kwargs, match", [
    ({"eps": 0.1, "version": "plus"}, "version must be one of 'standard', 'fast', 'rand', got 'plus'"),
    ({"eps": 0.1, "norm": "l1"}, "norm must be one of 'linf', 'l2'"),
    ({"eps": 8.0}, "pixel units of \\[0, 1\\].*divide by 255"),
    ({"eps": 40.0, "norm": "l2"}, "exceeds the diameter"),
    ({"eps": 0.0}, "eps must be > 0"),
    ({"eps": -0.1}, "eps must be a finite number >= 0"),
])
def test_bad_settings_are_refused_before_any_attack(lenet_pgd, robust_batch, monkeypatch, kwargs, match):
    x, y = robust_batch
    monkeypatch.setattr(A, "create", lambda *a, **k: pytest.fail("an attack was built"))
    with pytest.raises(ValueError, match=match):
        robust_accuracy(lenet_pgd, x[:4], y[:4], **kwargs)


def test_a_probability_output_model_is_refused(lenet_pgd, robust_batch):
    x, y = robust_batch
    with pytest.raises(ValueError, match="returns probabilities.*without its final softmax"):
        robust_accuracy(_Softmax(lenet_pgd), x[:4], y[:4], eps=0.1)


def test_mismatched_shapes_are_refused(lenet_pgd, robust_batch):
    x, y = robust_batch
    with pytest.raises(ValueError, match="same N"):
        robust_accuracy(lenet_pgd, x[:4], y[:3], eps=0.1)


def test_cli_robust_prints_the_table_and_the_checks(tmp_path):
    r = CliRunner().invoke(app, ["evaluate", "lenet_pgd", "--robust", "--eps", "0.1", "--version", "fast",
                                 "--limit", "12", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "robust accuracy after APGD-CE" in r.output and "broken by" in r.output
    assert '"robust_accuracy"' in (tmp_path / "results.json").read_text()


def test_cli_robust_needs_eps():
    r = CliRunner().invoke(app, ["evaluate", "lenet_pgd", "--robust"])
    assert r.exit_code != 0 and "--robust needs --eps" in r.output
