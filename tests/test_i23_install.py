"""Issue 23: a plain install works (no click import, typer's own exceptions), the app-wide handler's messages, and
the models the SGM reproduction picks by itself (plainly trained ones)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from advkit.cli import app
from advkit.models import adversarially_trained, read_card, shipped
from advkit.reproduce.sgm import _pick_sources, sgm_configs

runner = CliRunner()


def test_cli_runs_without_click_installed():
    # typer >= 0.28 bundles its own click and no longer installs it: advkit must not import click itself
    code = ("import sys; sys.modules['click'] = None\n"
            "from typer.testing import CliRunner\n"
            "from advkit.cli import app\n"
            "r = CliRunner().invoke(app, ['--help'])\n"
            "assert r.exit_code == 0 and 'attack' in r.output, r.output\n"
            "r = CliRunner().invoke(app, ['evaluate', 'no-such-model'])\n"
            "assert r.exit_code == 2 and 'unknown model' in r.output, (r.exit_code, r.output)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]


def test_usage_errors_keep_their_own_message_and_status():
    # typer's usage errors (an unknown option) are not swallowed by the app-wide handler
    r = runner.invoke(app, ["evaluate", "resnet20", "--no-such-option"])
    assert r.exit_code == 2
    assert "No such option" in r.output


def test_file_exists_error_with_a_message_is_printed_as_it_is(tmp_path, monkeypatch):
    # before: "error: None already exists and is not a run folder" for a FileExistsError raised with a message
    import advkit.reproduce.fgsm as fgsm

    def refuse(*_a, **_k):
        raise FileExistsError(f"{tmp_path} holds a finished run; choose another --out")

    monkeypatch.setattr(fgsm, "measure_fgsm", refuse)
    r = runner.invoke(app, ["reproduce", "fgsm", "--out", str(tmp_path)])
    assert r.exit_code == 2
    assert "None" not in r.output
    assert f"{tmp_path} holds a finished run; choose another --out" in " ".join(r.output.split())


def test_file_exists_error_from_the_os_names_the_path(tmp_path, monkeypatch):
    import advkit.reproduce.fgsm as fgsm

    def refuse(*_a, **_k):
        raise FileExistsError(17, "File exists", str(tmp_path / "x"))

    monkeypatch.setattr(fgsm, "measure_fgsm", refuse)
    r = runner.invoke(app, ["reproduce", "fgsm", "--out", str(tmp_path)])
    assert r.exit_code == 2
    assert f"{tmp_path / 'x'} already exists" in " ".join(r.output.split())


# --------------------------------------------------------------------------- the demo's sources and targets
def test_quick_sgm_reproduction_crafts_on_the_plain_resnet20():
    # before: resnet20_ensadv, the ensemble-adversarially trained twin (it sorted after resnet20)
    quick = sgm_configs(True)
    assert quick["table"]["sources"] == ["resnet20"]
    assert quick["table"]["targets"] == ["resnet20", "vgg11_bn", "densenet_bc40", "resnet56", "se_resnet20"]
    cards = {p.stem: read_card(p) for p in shipped("fashion-mnist")}
    assert not any(adversarially_trained(cards[t]) for t in quick["table"]["targets"])


def test_full_sgm_reproduction_picks_plain_sources_and_asks_for_the_robust_targets():
    full = sgm_configs(False)
    assert full["table"]["sources"] == ["resnet56", "densenet_bc40"]
    targets = full["table"]["targets"]
    assert {"resnet20_ensadv", "maxout_advtrain", "lenet_pgd"} <= set(targets)  # the paper's robust targets
    plain = sgm_configs(False, robust_targets=False)["table"]["targets"]
    assert not {"resnet20_ensadv", "maxout_advtrain", "lenet_pgd"} & set(plain)
    assert set(targets) - set(plain) == {"resnet20_ensadv", "maxout_advtrain", "lenet_pgd"}


def _card(arch: str, adversarial: bool = False, connections: str = "residual") -> dict:
    c = {"arch": arch, "connections": connections, "recipe": {"adversarial": None}}
    if adversarial:
        c["adversarial_training"] = {"attack": "ensemble"}
    return c


def test_pick_sources_never_takes_an_adversarially_trained_model_whatever_the_order():
    zoo = [("a_resnet20_robust", _card("resnet20", True)), ("resnet56", _card("resnet56")),
           ("resnet20", _card("resnet20")), ("z_resnet20_robust", _card("resnet20", True)),
           ("densenet", _card("densenet_bc40", connections="dense")),
           ("robust_densenet", _card("densenet_bc40", True, connections="dense"))]
    for order in (zoo, zoo[::-1]):
        assert _pick_sources(order, quick=True) == ["resnet20"]
        assert _pick_sources(order, quick=False) == ["resnet56", "densenet"]
    only_robust = [("r", _card("resnet20", True))]
    assert _pick_sources(only_robust, quick=True) == []


def test_adversarially_trained_reads_the_card():
    cards = {p.stem: json.loads(Path(p).with_suffix(".json").read_text()) for p in shipped("fashion-mnist")}
    robust = sorted(n for n, c in cards.items() if adversarially_trained(c))
    assert robust == ["lenet_pgd", "maxout_advtrain", "resnet20_ensadv"]


def test_the_declared_license_file_exists():
    root = Path(__file__).resolve().parents[1]
    assert "MIT License" in (root / "LICENSE").read_text()
    assert 'license-files = ["LICENSE"]' in (root / "pyproject.toml").read_text()
