"""Issue 25: the ensemble methods SVRE (Xiong et al., CVPR 2022) and CWA (Chen et al., ICLR 2024).

The golden tests recompute two outer iterations of each algorithm by hand, with direct tensor formulas from the
papers, on a tiny seeded ensemble of two linear classifiers, and compare to the attack to 1e-6.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

import advkit.attacks as A
from advkit.models import Classifier, ensemble

EPS = 0.1


def _linear(seed: int) -> Classifier:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.Tanh(), nn.Linear(8, 5))
    return Classifier(net, (0.5,), (0.5,), (1, 6, 6), 5, name=f"lin{seed}", card={"dataset": "toy"}).freeze()


@pytest.fixture
def members() -> list[Classifier]:
    return [_linear(0), _linear(1)]


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.rand(4, 1, 6, 6, generator=g, dtype=torch.float32) * 0.8 + 0.1, torch.tensor([0, 1, 2, 3])


def _grad(f, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # noqa: ANN001 - a classifier
    leaf = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(f(leaf), y, reduction="sum"), leaf)
    return g


def _clip(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.min(torch.max(p, x - EPS), x + EPS).clamp(0, 1)


def _l1(g: torch.Tensor) -> torch.Tensor:
    return g / g.abs().sum(dim=(1, 2, 3), keepdim=True)


def test_svre_two_iterations_match_the_paper(members, batch):
    x, y = batch
    ens = ensemble(members)
    attack = A.create("svre", eps=EPS, steps=2, alpha=0.03, inner_steps=3, inner_alpha=0.02)
    r = attack(ens, x, y, generator=torch.Generator().manual_seed(11))
    drawn = r.info["svre_members"]
    # the draws are the generator's: uniform over the two members, M per outer iteration
    g = torch.Generator().manual_seed(11)
    assert drawn == [torch.multinomial(torch.tensor([0.5, 0.5], dtype=torch.float64), 3, replacement=True,
                                       generator=g).tolist() for _ in range(2)]
    x_t, big_g = x.clone(), torch.zeros_like(x)
    for t in range(2):
        g_ens = _grad(lambda v: (members[0](v) + members[1](v)) / 2, x_t, y)
        xi, gi = x_t.clone(), torch.zeros_like(x)
        for k in drawn[t]:
            vr = _grad(members[k], xi, y) - (_grad(members[k], x_t, y) - g_ens)
            gi = 1.0 * gi + _l1(vr)
            xi = _clip(xi + 0.02 * gi.sign(), x)
        big_g = 1.0 * big_g + _l1(gi)
        x_t = _clip(x_t + 0.03 * big_g.sign(), x)
    torch.testing.assert_close(r.x_adv, x_t, atol=1e-6, rtol=0)
    assert (r.x_adv - x).abs().max() <= EPS + 1e-6 and r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    # 2 ensemble passes + the success check; member passes: 3 inner + (distinct members drawn) at x_t per iteration
    member = sum(3 + len(set(d)) for d in drawn)
    assert r.info["member_forward_passes"] == r.info["member_backward_passes"] == member
    assert r.forward_passes == 2 + 1 + -(-member // 2) and r.backward_passes == 2 + -(-member // 2)
    assert r.info["inner_steps"] == 3


def test_cwa_two_iterations_match_the_paper(members, batch):
    x, y = batch
    ens = ensemble(members)
    attack = A.create("cwa", eps=EPS, steps=2, alpha=0.03, reverse_alpha=0.01, inner_alpha=0.5)
    r = attack(ens, x, y)

    def l2(v: torch.Tensor) -> torch.Tensor:
        return v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)

    x_t, m, big_m = x.clone(), torch.zeros_like(x), torch.zeros_like(x)
    for _ in range(2):
        g = _grad(lambda v: (members[0](v) + members[1](v)) / 2, x_t, y)
        p = _clip(x_t - 0.01 * g.sign(), x)
        for f in members:
            m = 1.0 * m + l2(_grad(f, p, y))
            p = _clip(p + 0.5 * m, x)
        big_m = 1.0 * big_m + _l1(p - x_t)
        x_t = _clip(x_t + 0.03 * big_m.sign(), x)
    torch.testing.assert_close(r.x_adv, x_t, atol=1e-6, rtol=0)
    assert (r.x_adv - x).abs().max() <= EPS + 1e-6
    assert r.info["member_forward_passes"] == 4 and r.forward_passes == 2 + 2 + 1 and r.backward_passes == 4


def test_defaults_are_the_papers():
    svre, cwa = A.create("svre"), A.create("cwa")
    assert (svre.eps, svre.steps, svre.decay, svre.inner_steps, svre.inner_alpha) == (16 / 255, 10, 1.0, None, None)
    assert svre.step_size == pytest.approx(1.6 / 255)
    assert cwa.step_size == pytest.approx(16 / 255 / 5) and cwa.reverse_size == pytest.approx(16 / 255 / 15)
    assert (cwa.inner_alpha, cwa.decay) == (250.0, 1.0)
    assert A.standalone()["svre"].kind == A.standalone()["cwa"].kind == "gradient"


def test_svre_draws_4k_inner_steps_and_is_seeded(members, batch):
    x, y = batch
    ens = ensemble([*members, _linear(2)])
    a = A.create("svre", eps=EPS, steps=1)
    r1 = a(ens, x, y, generator=torch.Generator().manual_seed(0))
    r2 = a(ens, x, y, generator=torch.Generator().manual_seed(0))
    assert len(r1.info["svre_members"][0]) == 12 and r1.info["inner_steps"] == 12
    assert torch.equal(r1.x_adv, r2.x_adv)


@pytest.mark.parametrize("name", ["svre", "cwa"])
def test_refuses_a_single_model_and_bad_settings(name, members, batch):
    x, y = batch
    with pytest.raises(ValueError, match=f"{name} needs an ensemble of surrogates: advkit.models.ensemble"):
        A.create(name, steps=1)(members[0], x, y)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        A.create(name, steps=0)
    with pytest.raises(ValueError, match="norm must be 'linf' or 'l2'"):
        A.create(name, norm="l0")
    with pytest.raises(ValueError, match="loss must be one of"):
        A.create(name, loss="nope")


def test_cwa_refuses_unequal_weights(members, batch):
    x, y = batch
    with pytest.raises(ValueError, match="equal weights"):
        A.create("cwa", steps=1)(ensemble(members, weights=[1, 3]), x, y)


@pytest.mark.parametrize("name", ["svre", "cwa"])
@pytest.mark.parametrize("fuse", ["logits", "loss"])
def test_l2_and_targeted_hold_the_budget(name, fuse, members, batch):
    x, y = batch
    target = (y + 1) % 5
    r = A.create(name, eps=0.5, norm="l2", steps=3)(ensemble(members, fuse=fuse), x, y, target=target)
    assert (r.x_adv - x).flatten(1).norm(dim=1).max() <= 0.5 + 1e-6 and r.target is not None
    r = A.create(name, eps=EPS, steps=3, loss="logit")(ensemble(members, fuse=fuse), x, y, target=target)
    assert (r.x_adv - x).abs().max() <= EPS + 1e-6


def test_advkit_attack_cli_runs_svre_on_an_ensemble(tmp_path):
    from advkit.cli import app

    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["attack", "svre", "--model", "ensemble:lenet+mlp", "--limit", "16", "--steps", "2",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output + repr(r.exception)
    res = json.loads((out / "results.json").read_text())
    assert res["info"]["member_forward_passes"] > 0 and res["linf_max"] <= 16 / 255 + 1e-6
    bad = CliRunner().invoke(app, ["attack", "cwa", "--model", "lenet", "--steps", "1", "--limit", "8"])
    assert bad.exit_code == 2 and "needs an ensemble of surrogates" in bad.output
