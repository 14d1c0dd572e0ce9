"""Issue 25: ``advkit reproduce targeted-transfer``, Zhao et al. (NeurIPS 2021) on the zoo: DI+TI+MI with the CE,
Po+Trip and logit losses over 20 / 100 / 300 iterations, single sources and their hold-out ensembles, a random
target per image, one study per iteration count, and a report that says whether the paper's finding holds."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from advkit.cli import app
from advkit.models import Classifier, adversarially_trained, get_arch, read_card, save_checkpoint, shipped
from advkit.reproduce import REPRODUCTIONS, targeted
from advkit.reproduce.targeted import TargetedSettings, analyse, targeted_configs, verdict
from advkit.study.errors import RunExistsError
from tests.test_transfer import make_tiny_zoo

NAME = "targeted-transfer"


def flat(text: str) -> str:
    return " ".join(text.split())


def test_list_shows_it_with_its_settings_and_quick_values():
    r = CliRunner().invoke(app, ["reproduce", "--list"])
    assert r.exit_code == 0, r.output
    out = flat(r.output)
    assert f"{NAME}: Zhao et al. 2021" in out
    assert "losses = ce,potrip,logit" in out and "iterations = 20,100,300 (--quick: 10,20)" in out
    assert "eps = 16/255,0.1" in out and "alpha = 2/255" in out and "ti_kernel = 5" in out
    assert "sources = resnet20,resnet56,densenet_bc40 (--quick: resnet20)" in out
    assert "seeds = 0,1,2 (--quick: 0)" in out and "n = 1000 (--quick: 50)" in out


def _attacks(cfg: dict) -> dict[str, dict]:
    return {a["label"]: a for a in cfg["attacks"]}


def test_quick_plan_has_the_losses_iterations_and_eps():
    cfgs = targeted_configs(REPRODUCTIONS[NAME].make_settings(quick=True))
    assert list(cfgs) == ["steps-10", "steps-20"]
    plain = {p.stem for p in shipped("fashion-mnist") if not adversarially_trained(read_card(p))}
    for steps, cfg in zip((10, 20), cfgs.values(), strict=True):
        assert cfg["steps"] == steps and cfg["alpha"] == "2/255"  # the paper's step, whatever the iterations
        assert cfg["eps"] == ["16/255", "0.1"] and cfg["targeted"] == "random"
        assert cfg["sources"] == ["resnet20"] and set(cfg["targets"]) == plain
        assert "resnet20_ensadv" not in cfg["targets"] and "lenet_pgd" not in cfg["targets"]
        assert cfg["seeds"] == [0] and cfg["sample"]["n"] == 50
        atk = _attacks(cfg)
        assert list(atk) == ["ce", "potrip", "logit"]
        for loss, a in atk.items():
            assert a["name"] == "mi+di+ti" and a["settings"] == {"loss": loss, "ti_kernel": 5, "di_prob": 0.7}
    # the studies attack the same images with the same targets: only the iterations differ
    a, b = (dict(c) for c in cfgs.values())
    assert {k: v for k, v in a.items() if k not in ("steps", "title")} == \
        {k: v for k, v in b.items() if k not in ("steps", "title")}


def test_full_plan_has_the_hold_out_ensembles_and_three_seeds():
    cfgs = targeted_configs(REPRODUCTIONS[NAME].make_settings())
    assert list(cfgs) == ["steps-20", "steps-100", "steps-300"]
    cfg = cfgs["steps-300"]
    assert cfg["sources"] == ["resnet20", "resnet56", "densenet_bc40", "ensemble:resnet56+densenet_bc40",
                              "ensemble:resnet20+densenet_bc40", "ensemble:resnet20+resnet56"]
    assert cfg["seeds"] == [0, 1, 2] and cfg["sample"]["n"] == 1000 and cfg["alpha"] == "2/255"


def test_bad_settings_are_refused_naming_the_fix():
    rep = REPRODUCTIONS[NAME]
    with pytest.raises(ValueError, match="ensembles needs 3 or more sources.*--set ensembles=false"):
        rep.make_settings(changes={"sources": "resnet20,resnet56"})
    with pytest.raises(ValueError, match="iterations must be 2 or more increasing"):
        rep.make_settings(changes={"iterations": "100,20"})
    with pytest.raises(ValueError, match="loss must be one of"):
        targeted_configs(rep.make_settings(quick=True, changes={"losses": "ce,hinge"}))


def _records(gain: dict[str, tuple[float, float, float]], seeds=(0, 1, 2)) -> dict[int, dict]:
    """Synthetic study records: per loss its success at 20 / 100 / 300 iterations, with a small seed effect, on
    two transfer pairs, plus a white-box row and an ensemble's member row that must not count."""
    out: dict[int, dict] = {}
    for i, steps in enumerate((20, 100, 300)):
        rows = []
        for loss, levels in gain.items():
            for k in seeds:
                for src, tgt, rate in (("resnet20", "vgg11_bn", levels[i] + 0.01 * k),
                                       ("resnet20", "lenet", levels[i] - 0.01 * k + 0.02),
                                       ("resnet20", "resnet20", 1.0),  # white-box: not transfer
                                       ("ensemble:resnet56+densenet_bc40", "resnet56", 1.0)):  # a member
                    for images in ("float", "8bit"):
                        rows.append({"source": src, "target": tgt, "attack": loss, "eps": "16/255", "seed": k,
                                     "images": images, "over": "all", "rate": rate if images == "float" else 0.0})
        out[steps] = {"success": rows}
    return out


def test_the_verdict_is_computed_from_the_intervals():
    s = TargetedSettings(losses=("ce", "logit"), eps=("16/255",))
    _, lines, res = analyse(_records({"ce": (0.30, 0.34, 0.35), "logit": (0.30, 0.50, 0.70)}), s)
    f = res["findings"]["16/255"]
    assert f["verdict"] == "holds" and f["logit_late_gain"][0] == pytest.approx(0.20)
    assert f["logit_minus_ce_gain"][0] == pytest.approx(0.35)
    assert "finding holds here" in lines[0]
    # the levels are means over the transfer pairs only (white-box and member rows left out)
    assert res["success"][("logit", 300, "16/255")][0] == pytest.approx(0.71)
    _, lines, res = analyse(_records({"ce": (0.30, 0.50, 0.70), "logit": (0.30, 0.40, 0.40)}), s)
    assert res["findings"]["16/255"]["verdict"] == "does not hold" and "does not hold" in lines[0]
    assert verdict((0.1, -0.05, 0.25), (0.2, 0.1, 0.3)) == "inconclusive"  # an interval across 0
    assert verdict((0.1, None, None), (0.2, None, None)) == "inconclusive"  # no interval


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, fmnist_test):
    """A very tiny full-shape run: three seeded untrained models (so hold-out ensembles exist), 8 images, 1 and 2
    iterations, CE and logit, two seeds."""
    folder = tmp_path_factory.mktemp("tt_zoo")
    zoo = make_tiny_zoo(folder)
    torch.manual_seed(2)
    spec = get_arch("linear")
    save_checkpoint(Classifier(spec.build(1, 10, 28), (0.286,), (0.353,), (1, 28, 28), 10, name="tlin2"),
                    folder / "tlin2.safetensors",
                    {"arch": "linear", "name": "tlin2", "input_shape": [1, 28, 28], "num_classes": 10,
                     "mean": [0.286], "std": [0.353], "connections": "none", "dataset": "fashion-mnist"})
    paths = (zoo["tres"], zoo["tlin"], str(folder / "tlin2.safetensors"))
    rep = REPRODUCTIONS[NAME]
    s = rep.make_settings(changes={"sources": paths, "targets": paths, "iterations": (1, 2), "n": 8,
                                   "seeds": (0, 1), "eps": ("16/255",), "batch_size": 8, "losses": ("ce", "logit")})
    orig = targeted.targeted_configs
    mp = pytest.MonkeyPatch()
    # untrained models classify few images correctly: attack any image
    mp.setattr(targeted, "targeted_configs", lambda st: {k: {**c, "sample": {**c["sample"], "only_correct": False}}
                                                         for k, c in orig(st).items()})
    out = tmp_path_factory.mktemp("tt") / "run"
    try:
        yield rep, s, out, rep.run(out, s, command="pytest tiny")
    finally:
        mp.undo()


def test_a_tiny_run_writes_the_report_with_the_finding(tiny_run):
    _, _, out, outcome = tiny_run
    for name in ("report.md", "report.html", "reproduction.json", "steps-1/report.html", "steps-2/results.json"):
        assert (out / name).is_file(), name
    md = (out / "report.md").read_text()
    assert "Targeted transfer (Zhao et al., NeurIPS 2021)" in md
    assert any(f"Zhao et al.'s finding {v} here" in md for v in ("holds", "does not hold", "inconclusive"))
    assert "intervals over seeds" in flat(md) and "| logit | 2 |" in md
    assert "Zhao et al.'s finding" in html.unescape((out / "report.html").read_text())
    assert json.loads((out / "reproduction.json").read_text())["status"] == "finished"
    cfg = json.loads((out / "steps-2" / "config.json").read_text())
    assert cfg["targeted"] == "random" and [s for s in cfg["sources"] if s.startswith("ensemble:")] == \
        ["ensemble:" + "+".join(p for p in cfg["sources"][:3] if p != held) for held in cfg["sources"][:3]]
    # the numbers: mean over seeds of the mean over transfer pairs (no white-box, no member of the ensemble)
    rec = json.loads((out / "steps-2" / "results.json").read_text())
    per_seed = []
    for k in (0, 1):
        rows = [r["rate"] for r in rec["success"] if r["attack"] == "logit" and r["seed"] == k
                and r["images"] == "float" and r["over"] == "all" and r["target"] != r["source"]
                and r["target"] not in r["source"].removeprefix("ensemble:").split("+")]
        assert len(rows) == 3 * 2 + 3 * 1  # singles: 2 other models each; ensembles: the held-out model
        per_seed.append(sum(rows) / len(rows))
    assert outcome.result["success"][("logit", 2, "16/255")][0] == pytest.approx(sum(per_seed) / 2)


def test_a_finished_run_is_refused_and_an_interrupted_one_resumes(tiny_run, tmp_path):
    rep, s, out, first = tiny_run
    with pytest.raises(RunExistsError, match="already holds a finished targeted-transfer run"):
        rep.run(out, s)
    manifest = json.loads((out / "reproduction.json").read_text())
    (out / "reproduction.json").write_text(json.dumps({**manifest, "status": "running"}))
    stamp = (out / "steps-1" / "results.json").stat().st_mtime_ns
    again = rep.run(out, s)  # steps-1 (finished) is read back, not run again
    assert (out / "steps-1" / "results.json").stat().st_mtime_ns == stamp
    assert again.result["success"] == first.result["success"]
    assert again.lines[:-1] == first.lines[:-1]  # the same finding sentences (the last line is the time)
    assert "finding" in Path(again.files["markdown"]).read_text()
