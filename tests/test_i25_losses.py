"""Issue 25, targeted transfer: the losses of every iterative attack (``loss="ce" | "logit" | "margin" | "potrip"``),
their registry, ``advkit attack --loss`` and the study's ``settings: {loss: ...}``."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import advkit.attacks as A
from advkit.attacks.core.base import attack_loss  # the old import path keeps working
from advkit.attacks.core.losses import LOSSES, POTRIP_GAMMA, POTRIP_LAMBDA, POTRIP_XI, check_loss
from advkit.cli import app
from advkit.study.config import ConfigError, load_config
from advkit.study.plan import plan_cells

LOGITS = torch.tensor([[2.0, -1.0, 0.5, 1.0], [0.3, 0.2, -2.0, 1.5]], dtype=torch.float64)
Y = torch.tensor([0, 3])
T = torch.tensor([2, 1])
runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(re.sub("[│╭╮╰╯─┃━]", " ", text).split())


def _potrip_by_hand(z: list[float], y: int, t: int) -> float:
    """Li et al. (CVPR 2020) for one sample, in plain floats: Poincare distance of z/||z||_1 to max(onehot_t - xi, 0)
    plus lambda * [D(z, t) - D(z, y) + gamma]_+ with D(a, b) = 1 - |a.b| / (||a|| ||b||)."""
    l1 = sum(abs(v) for v in z)
    u = [v / l1 for v in z]
    v = [max((1.0 if j == t else 0.0) - POTRIP_XI, 0.0) for j in range(len(z))]
    uu, vv = sum(a * a for a in u), sum(b * b for b in v)
    po = math.acosh(1 + 2 * sum((a - b) ** 2 for a, b in zip(u, v, strict=True)) / ((1 - uu) * (1 - vv)))
    l2 = math.sqrt(sum(a * a for a in z))
    d_t, d_y = 1 - abs(z[t]) / l2, 1 - abs(z[y]) / l2
    return po + POTRIP_LAMBDA * max(d_t - d_y + POTRIP_GAMMA, 0.0)


def test_each_loss_on_hand_computed_logits():
    # logit (Zhao et al. 2021): targeted z_t summed over the batch; untargeted minus the true class's logit
    assert float(attack_loss(LOGITS, Y, T, "logit")) == pytest.approx(0.5 + 0.2)
    assert float(attack_loss(LOGITS, Y, None, "logit")) == pytest.approx(-(2.0 + 1.5))
    # potrip (Li et al. 2020): the attack ascends minus the summed per-sample Po+Trip
    want = _potrip_by_hand([2.0, -1.0, 0.5, 1.0], 0, 2) + _potrip_by_hand([0.3, 0.2, -2.0, 1.5], 3, 1)
    assert float(attack_loss(LOGITS, Y, T, "potrip")) == pytest.approx(-want, rel=1e-12)
    # both samples have |z_y| > |z_t|, so the paper's triplet term is active in both (the reference code's flipped
    # term, [cos_t - cos_y + gamma]_+, would be clamped to 0 and miss the golden value)
    assert all(abs(float(LOGITS[i, Y[i]])) - abs(float(LOGITS[i, T[i]])) > POTRIP_GAMMA * 10 for i in range(2))
    # ce and margin: the same values as before the registry (bit for bit)
    assert torch.equal(attack_loss(LOGITS, Y, None, "ce"), F.cross_entropy(LOGITS, Y, reduction="sum"))
    assert torch.equal(attack_loss(LOGITS, Y, T, "ce"), -F.cross_entropy(LOGITS, T, reduction="sum"))
    assert float(attack_loss(LOGITS, Y, None, "margin")) == pytest.approx((1.0 - 2.0) + (0.3 - 1.5))
    assert float(attack_loss(LOGITS, Y, T, "margin")) == pytest.approx((0.5 - 2.0) + (0.2 - 1.5))


def test_potrip_is_summed_per_sample():
    """One sample's Po+Trip does not depend on the others (the reference code clamps the batch mean)."""
    both = attack_loss(LOGITS, Y, T, "potrip")
    parts = sum(attack_loss(LOGITS[i:i + 1], Y[i:i + 1], T[i:i + 1], "potrip") for i in range(2))
    assert float(both) == pytest.approx(float(parts), rel=1e-12)


def test_registry_lists_the_four_losses_with_papers():
    assert list(LOSSES) == ["ce", "logit", "margin", "potrip"]
    assert [n for n, e in LOSSES.items() if e.targeted_only] == ["potrip"]
    assert "Zhao" in LOSSES["logit"].paper and "Li et al." in LOSSES["potrip"].paper
    with pytest.raises(ValueError, match="loss must be one of 'ce', 'logit', 'margin', 'potrip', got 'hinge'"):
        check_loss("hinge")
    with pytest.raises(ValueError, match="loss must be one of .*got 'hinge'"):
        A.create("mi", loss="hinge")
    assert A.create("mi", loss="logit").config()["loss"] == "logit"


def test_potrip_untargeted_is_refused():
    with pytest.raises(ValueError, match="'potrip'.*only for targeted attacks: pass target="):
        attack_loss(LOGITS, Y, None, "potrip")


def test_potrip_untargeted_attack_is_refused(tiny_resnet):
    x = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="only for targeted attacks"):
        A.create("mi", loss="potrip", steps=2)(tiny_resnet, x, torch.tensor([0, 1]))


@pytest.mark.parametrize("loss", ["logit", "potrip"])
def test_a_targeted_attack_moves_toward_the_target(tiny_resnet, loss):
    """Gradient direction: a targeted attack raises the target's logit (logit), lowers Po+Trip (potrip)."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(8, 1, 12, 12, generator=g)
    with torch.no_grad():
        y = tiny_resnet(x).argmax(1)
    t = (y + 1 + torch.randint(0, 9, y.shape, generator=g)) % 10
    r = A.create("ifgsm", loss=loss, eps=8 / 255, steps=5)(tiny_resnet, x, y, target=t)
    with torch.no_grad():
        before, after = tiny_resnet(x), tiny_resnet(r.x_adv)
    if loss == "logit":
        assert (after.gather(1, t[:, None]) > before.gather(1, t[:, None])).all()
    for i in range(len(y)):  # every sample's own objective rises (so its gradient is its own)
        one = slice(i, i + 1)
        assert float(attack_loss(after[one], y[one], t[one], loss)) > float(attack_loss(before[one], y[one], t[one],
                                                                                        loss))


def test_an_untargeted_logit_attack_lowers_the_true_logit(tiny_resnet):
    x = torch.rand(8, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = tiny_resnet(x).argmax(1)
    r = A.create("mi", loss="logit", eps=8 / 255, steps=5)(tiny_resnet, x, y)
    with torch.no_grad():
        assert (tiny_resnet(r.x_adv).gather(1, y[:, None]) < tiny_resnet(x).gather(1, y[:, None])).all()


def test_cli_help_names_every_registered_loss():
    r = runner.invoke(app, ["attack", "--help"], env={"COLUMNS": "200"})
    text = flat(r.output)
    help_text = text[text.index("--loss"):text.index("--max-queries")]
    for name in LOSSES:
        assert re.search(rf"\b{name}\b", help_text), (name, help_text)
    assert "--targeted" in help_text


def test_cli_refuses_potrip_without_targeted_before_any_work(tmp_path: Path):
    out = tmp_path / "run"
    r = runner.invoke(app, ["attack", "mi", "--model", "lenet", "--loss", "potrip", "--limit", "8", "--out", str(out)])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
    assert "--loss potrip" in flat(r.output) and "add --targeted" in flat(r.output)
    assert not out.exists()


def test_cli_unknown_loss_names_the_registry(tmp_path: Path):
    r = runner.invoke(app, ["attack", "mi", "--model", "lenet", "--loss", "hinge", "--limit", "8",
                            "--out", str(tmp_path / "run")])
    assert r.exit_code == 2, r.output
    assert "loss must be one of 'ce', 'logit', 'margin', 'potrip', got 'hinge'" in flat(r.output)


def test_cli_targeted_logit_attack_runs(tmp_path: Path):
    out = tmp_path / "run"
    r = runner.invoke(app, ["attack", "mi", "--model", "lenet", "--loss", "logit", "--targeted", "--steps", "3",
                            "--limit", "8", "--out", str(out)])
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["attack_kwargs"]["loss"] == "logit" and cfg["targeted"] is True


BASE = {"dataset": "fashion-mnist", "sources": ["resnet20"], "targets": ["lenet"], "attacks": ["ifgsm"],
        "eps": ["16/255"], "steps": 5, "seeds": [0]}


def test_the_study_sweeps_the_loss():
    cfg = load_config({**BASE, "attacks": ["ifgsm", {"name": "mi", "settings": {"loss": ["ce", "logit"]}}]})
    cells = [c for c in plan_cells(cfg, {"resnet20": "residual"}) if c.label != "ifgsm"]
    assert [(c.label, c.kwargs["loss"]) for c in cells] == [("mi loss=ce", "ce"), ("mi loss=logit", "logit")]
    with pytest.raises(ConfigError) as e:
        load_config({**BASE, "attacks": ["ifgsm", {"name": "mi", "settings": {"loss": "hinge"}}]})
    assert e.value.problems == ["attacks[1].settings: loss must be one of 'ce', 'logit', 'margin', 'potrip', "
                                "got 'hinge'"]
