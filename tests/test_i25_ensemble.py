"""Issue 25: ensembles of surrogates (advkit.models.ensemble, ``ensemble:A+B`` names, per-member SGM / LinBP / ILA)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

import advkit.models as M
from advkit.attacks import create
from advkit.attacks.core.base import Counter, attack_loss
from advkit.attacks.gradient.parts import Context
from advkit.attacks.gradient.scopes import SkipGradient
from advkit.backprop import skip_gradient
from advkit.models import Classifier, ensemble
from advkit.models.ensemble import parse_name
from tests.conftest import TinyResNet


def _resnet(seed: int, gamma: float | None = None) -> Classifier:
    torch.manual_seed(seed)
    card = {"dataset": "fashion-mnist", "connections": "residual"}
    if gamma is not None:
        card["sgm_gamma"] = gamma
    return Classifier(TinyResNet(), (0.5,), (0.25,), (1, 12, 12), 10, name=f"res{seed}", card=card).freeze()


def _linear(seed: int, classes: int = 10, shape: tuple[int, int, int] = (1, 12, 12),
            dataset: str = "fashion-mnist") -> Classifier:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(shape[0] * shape[1] * shape[2], 16), nn.ReLU(), nn.Linear(16, classes))
    return Classifier(net, (0.3,), (0.4,), shape, classes, name=f"lin{seed}",
                      card={"dataset": dataset, "connections": "none"}).freeze()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.rand(6, 1, 12, 12, generator=g) * 0.6 + 0.2, torch.randint(0, 10, (6,), generator=g)


def _input_grad(loss_of: object, x: torch.Tensor) -> torch.Tensor:
    leaf = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_of(leaf), leaf)  # type: ignore[operator]
    return g


def test_fuse_logits_and_probs_match_their_formulas(batch):
    x, y = batch
    a, b, c = _resnet(0), _linear(1), _linear(2)
    w = (1.0, 2.0, 1.0)
    with torch.no_grad():
        za, zb, zc = a(x), b(x), c(x)
        mean = (za + 2 * zb + zc) / 4
        torch.testing.assert_close(ensemble([a, b, c], weights=w)(x), mean, atol=1e-6, rtol=0)
        p = (F.softmax(za, 1) + 2 * F.softmax(zb, 1) + F.softmax(zc, 1)) / 4
        out = ensemble([a, b, c], fuse="probs", weights=w)(x)
        torch.testing.assert_close(out.exp(), p, atol=1e-6, rtol=0)
        assert torch.equal(out.argmax(1), p.argmax(1))
        torch.testing.assert_close(F.cross_entropy(out, y), -p.gather(1, y[:, None]).log().mean(), atol=1e-5,
                                   rtol=0)
        # the loss fuse predicts with the mean logits
        torch.testing.assert_close(ensemble([a, b, c], fuse="loss", weights=w)(x), mean, atol=1e-6, rtol=0)


def test_loss_fuse_gradient_is_the_mean_of_member_gradients(batch):
    """One L2 step of size eps moves along the normalised gradient: for fuse='loss' that gradient is the weighted
    mean of each member's own cross-entropy gradient (not the gradient of the mean logits)."""
    x, y = batch
    a, b = _resnet(0), _linear(1)
    ref = (_input_grad(lambda t: attack_loss(a(t), y, None, "ce"), x)
           + 3 * _input_grad(lambda t: attack_loss(b(t), y, None, "ce"), x)) / 4
    ref_dir = ref / ref.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    eps = 0.05
    atk = create("ifgsm", eps=eps, steps=1, norm="l2")
    r = atk(ensemble([a, b], fuse="loss", weights=[1, 3]), x, y)
    torch.testing.assert_close((r.x_adv - x) / eps, ref_dir, atol=2e-5, rtol=0)
    logits_fuse = atk(ensemble([a, b], weights=[1, 3]), x, y)
    assert ((logits_fuse.x_adv - r.x_adv) / eps).abs().max() > 1e-3  # a different objective, not a renamed one
    assert r.forward_passes == logits_fuse.forward_passes and r.backward_passes == 1


@pytest.mark.parametrize(("make", "match"), [
    (lambda: ensemble([_linear(0)]), "at least two members"),
    (lambda: ensemble([_linear(0), _linear(1)], fuse="votes"), "fuse must be one of"),
    (lambda: ensemble([_linear(0), _linear(1, classes=5)]), "class count"),
    (lambda: ensemble([_linear(0), _linear(1, shape=(1, 10, 10))]), "input shape"),
    (lambda: ensemble([_linear(0), _linear(1, dataset="mnist")]), "different datasets"),
    (lambda: ensemble([_linear(0), _linear(1)], weights=[1.0]), "one weight per member"),
    (lambda: ensemble([_linear(0), _linear(1)], weights=[1.0, -1.0]), ">= 0"),
    (lambda: ensemble([_linear(0), _linear(1)], weights=[0.0, 0.0]), "positive weight"),
    (lambda: ensemble([_linear(0), nn.Linear(3, 3)]), "advkit classifier"),
    (lambda: parse_name("ensemble:resnet20"), "at least two"),
    (lambda: parse_name("ensemble:resnet20++lenet"), "empty member"),
    (lambda: M.load("ensemble:lenet+nosuchmodel"), "unknown model 'nosuchmodel'"),
])
def test_bad_ensembles_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_ensemble_names_through_load():
    assert parse_name("ensemble:a+torchvision:resnet18@random@probs") == (["a", "torchvision:resnet18@random"],
                                                                            "probs")
    assert parse_name("ensemble:a+torchvision:resnet18@random") == (["a", "torchvision:resnet18@random"], "logits")
    e = M.load("ensemble:lenet+linear@loss")
    assert isinstance(e, M.Ensemble) and isinstance(e, Classifier)
    assert [m.name for m in e.members] == ["lenet", "linear"] and e.fuse == "loss"
    assert e.name == "ensemble:lenet+linear@loss" and e.card["dataset"] == "fashion-mnist"
    assert e.card["connections"] == "none" and e.input_shape == (1, 28, 28) and e.num_classes == 10
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(e(x), (M.load("lenet")(x) + M.load("linear")(x)) / 2, atol=1e-6, rtol=0)


def test_advkit_attack_cli_takes_an_ensemble_name(tmp_path):
    from advkit.cli import app

    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["attack", "sgm", "--model", "ensemble:resnet20+lenet", "--eps", "8/255", "--steps",
                                 "2", "--limit", "16", "--out", str(out)])
    assert r.exit_code == 0, r.output + repr(r.exception)
    res = json.loads((out / "results.json").read_text())
    sgm = res["info"]["sgm"]
    assert [m["member"] for m in sgm["members"]] == ["resnet20", "lenet"]
    assert sgm["members"][0]["gamma"] == 0.8 and "untouched" in sgm["members"][1]
    assert res["linf_max"] <= 8 / 255 + 1e-6
    bad = CliRunner().invoke(app, ["attack", "sgm", "--model", "ensemble:lenet+linear", "--steps", "1", "--limit", "8"])
    assert bad.exit_code == 2 and "no member of this ensemble has any" in bad.output


def _sgm_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, gamma: float | str) -> tuple[torch.Tensor, dict]:
    """The input gradient of the summed CE under the SGM part's scope (what the engine takes each step)."""
    counter = Counter(model)
    ctx = Context(model=counter, x=x, y=y, target=None, generator=torch.Generator(), eps=0.1, alpha=0.01,
                  norm="linf", loss="ce", gradient=lambda t: t)
    part = SkipGradient(gamma=gamma)
    with part.scope(model, ctx) as found:
        g = _input_grad(lambda t: attack_loss(model(t), y, None, "ce"), x)
    part.report(found, ctx)
    return g, ctx.info["sgm"]


def test_sgm_acts_per_member_with_each_members_gamma(batch):
    x, y = batch
    a, b, c = _resnet(0, gamma=0.3), _resnet(1, gamma=0.7), _linear(2)
    w = [1.0, 2.0, 1.0]
    e = ensemble([a, b, c], weights=w)
    g, info = _sgm_grad(e, x, y, "auto")
    # reference, member by member: each member's SGM gradient with its own gamma, weighted as the logits are
    ref = torch.zeros_like(x)
    for m, wi, gamma in ((a, 0.25, 0.3), (b, 0.5, 0.7), (c, 0.25, None)):
        if gamma is None:
            ref += _chain(m, e, x, y, wi)
        else:
            with skip_gradient(m, gamma=gamma):
                ref += _chain(m, e, x, y, wi)
    torch.testing.assert_close(g, ref, atol=1e-6, rtol=0)
    assert [r.get("gamma") for r in info["members"]] == [0.3, 0.7, None]
    assert info["members"][2]["untouched"] and info["connections"] == info["members"][0]["connections"] * 2
    # an explicit gamma applies to every member with skips
    _, info = _sgm_grad(e, x, y, 0.5)
    assert [r.get("gamma") for r in info["members"]] == [0.5, 0.5, None]
    assert all(r["hooks_fired"] > 0 for r in info["members"][:2])


def _chain(m: nn.Module, e: nn.Module, x: torch.Tensor, y: torch.Tensor, w: float) -> torch.Tensor:
    """Member ``m``'s share of the ensemble's CE gradient: ``w * J_m(x)^T dL/dz`` with ``dL/dz`` taken at the
    ensemble's logits (no hooks are active on the other members here)."""
    with torch.no_grad():
        dz = F.softmax(e(x), 1) - F.one_hot(y, 10)  # d(sum CE)/d(mean logits)
    leaf = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(m(leaf), leaf, grad_outputs=dz * w)
    return g


def test_sgm_on_an_ensemble_matches_one_member_sgm_when_alone(batch):
    """A loss-fused ensemble's SGM gradient is the weighted mean of each member's SGM gradient computed alone."""
    x, y = batch
    a, b = _resnet(0, gamma=0.3), _resnet(1, gamma=0.7)
    ga, _ = _sgm_grad(a, x, y, "auto")
    gb, _ = _sgm_grad(b, x, y, "auto")
    # one L2 step of size eps moves along the normalised loss-fused gradient
    r = create("sgm", eps=0.05, steps=1, norm="l2")(ensemble([a, b], fuse="loss"), x, y)
    ref = (ga + gb) / 2
    torch.testing.assert_close((r.x_adv - x) / 0.05, ref / ref.flatten(1).norm(dim=1).view(-1, 1, 1, 1),
                               atol=2e-5, rtol=0)
    assert r.info["sgm"]["members"][0]["gamma"] == 0.3 and r.info["sgm"]["members"][1]["gamma"] == 0.7


def test_sgm_and_linbp_refuse_an_ensemble_without_skip_connections(batch):
    x, y = batch
    e = ensemble([_linear(0), _linear(1)])
    for name, what in (("sgm", "SGM"), ("linbp", "LinBP")):
        with pytest.raises(ValueError, match=f"{what} needs .*no member of this ensemble has any"):
            create(name, eps=0.05, steps=1)(e, x, y)


def test_linbp_and_ila_find_their_block_per_member(batch):
    x, y = batch
    a, b, c = _resnet(0), _resnet(1), _linear(2)
    r = create("linbp+ila", eps=0.05, steps=2, ila_steps=2)(ensemble([a, b, c]), x, y)
    rows = r.info["linbp"]["members"]
    assert rows[0]["blocks"] == create("linbp", eps=0.05, steps=1)(a, x, y).info["linbp"]["blocks"]
    assert rows[0]["hooks_fired"] > 0 and rows[1]["hooks_fired"] > 0 and "untouched" in rows[2]
    alone = [create("ifgsm+ila", eps=0.05, steps=1, ila_steps=1)(m, x, y).info["ila"]["layer"] for m in (a, b, c)]
    assert r.info["ila"]["layer"] == alone


def test_tiny_transfer_study_with_an_ensemble_source(tmp_path, fmnist_test):
    from advkit.study.runner import run_study
    from tests.test_transfer import make_tiny_zoo, tiny_config

    zoo = make_tiny_zoo(tmp_path)
    src = f"ensemble:{zoo['tres']}+{zoo['tlin']}"
    cfg = tiny_config(zoo, sources=[src], targets=[zoo["tres"], zoo["tlin"], src], attacks=["ifgsm", "sgm"], steps=2,
                      seeds=[0],
                      sample={"n": 8, "only_correct": False}, save_png=0)
    res = run_study(cfg, tmp_path / "run", command="pytest i25")
    cells = res.records["cells"]
    assert {c["source"] for c in cells} == {"ensemble:tres+tlin"} and len(cells) == 2  # reports use the name
    for c in cells:
        assert all(ch not in c["id"] for ch in ":/") and (Path(res.run_dir) / "cells" / c["id"]).is_dir()
    sgm = next(c for c in cells if c["attack"] == "sgm")
    assert sgm["sgm_connections"] == 9 and sgm["sgm_hooks_fired"] > 0  # tres's nine blocks; tlin left untouched
    assert all(0 <= c["white_box_attack_success"] <= 1 for c in cells)
    assert {r["target"] for r in res.records["success"]} >= {"ensemble:tres+tlin", "tres", "tlin"}


def test_load_takes_member_weights_in_the_name():
    """The weighted form an experiment file normalises to is a model name like any other (models.load, the CLI)."""
    from advkit.models import load

    ens = load("ensemble:lenet+mlp@probs[3,1]", dataset="fashion-mnist")
    assert ens.fuse == "probs" and ens.weights == pytest.approx((0.75, 0.25))
    with pytest.raises(ValueError, match="2 weights for 3 members"):
        load("ensemble:lenet+mlp+linear@logits[1,2]", dataset="fashion-mnist")
