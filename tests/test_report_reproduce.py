"""Reproduction drivers (SGM on the zoo, the ImageNet protocol's dry run) and the CLI hook."""

from __future__ import annotations

import json

import pytest
import typer
import yaml
from typer.testing import CliRunner

from advkit.cli.study import parse_overrides, register_cli
from advkit.reproduce.sgm import reproduce_sgm, sgm_configs
from advkit.reproduce.sgm_imagenet import imagenet_config, reproduce_sgm_imagenet
from tests.test_transfer import make_tiny_zoo, tiny_config, tiny_zoo  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory, fmnist_test):
    """tres (ResNet-20), tlin (linear) and tden (DenseNet-BC-40), untrained and seeded."""
    import torch

    from advkit.models import Classifier, get_arch, save_checkpoint

    folder = tmp_path_factory.mktemp("zoo")
    make_tiny_zoo(folder)
    torch.manual_seed(2)
    net = get_arch("densenet_bc40").build(1, 10, 28)
    save_checkpoint(Classifier(net, (0.286,), (0.353,), (1, 28, 28), 10, name="tden"), folder / "tden.safetensors",
                    {"arch": "densenet_bc40", "name": "tden", "input_shape": [1, 28, 28], "num_classes": 10,
                     "mean": [0.286], "std": [0.353], "connections": "dense", "dataset": "fashion-mnist"})
    return folder


def test_sgm_configs_choose_sources_and_quick_cuts(zoo_dir):
    full = sgm_configs(False, models_dir=zoo_dir)
    t = full["table"]
    assert [s.rsplit("/", 1)[-1] for s in t["sources"]] == ["tres.safetensors", "tden.safetensors"]
    assert len(t["targets"]) == 3 and t["seeds"] == [0, 1, 2, 3, 4] and t["eps"] == ["16/255"]
    assert [a.get("label", a["name"]) for a in t["attacks"]] == ["ifgsm", "ti", "mi", "di", "sgm", "sgm+mi", "sgm+di",
                                                                  "sgm-auto"]
    assert t["gamma"] == {"residual": 0.2, "dense": 0.5} and t["alpha"] == "2/255"
    refs = t["reference"]["rows"]
    assert {r["source"] for r in refs} == {"tres", "tden"}
    assert any(r["paper_target"] == "DenseNet-201" and r["target"] == "tden" for r in refs)
    assert 1.0 in full["gamma-sweep"]["gamma"] and len(full["eps-sweep"]["eps"]) == 5
    quick = sgm_configs(True, models_dir=zoo_dir)
    assert len(quick["table"]["sources"]) == 1 and quick["table"]["seeds"] == [0]
    assert quick["gamma-sweep"]["seeds"] == [0] and quick["table"]["sample"]["pool"] == 200
    with pytest.raises(ValueError, match="no ResNet or DenseNet checkpoint"):
        sgm_configs(True, models_dir=zoo_dir / "empty-folder")


def test_reproduce_sgm_quick_end_to_end(zoo_dir, tmp_path):
    """The quick reproduction on tiny models and 4 images: three runs, a combined report, a printed matrix."""
    over = {"sample.only_correct": False, "steps": 2}  # untrained models agree on too few images
    targets = [str(zoo_dir / "tres.safetensors"), str(zoo_dir / "tlin.safetensors")]
    r = reproduce_sgm(tmp_path / "sgm", quick=True, models_dir=zoo_dir, n=4, seeds=[0], targets=targets,
                      overrides=over)
    assert set(r.runs) == {"table", "gamma-sweep", "eps-sweep"}
    for run in r.runs.values():
        assert (run / "results.json").is_file() and (run / "report.html").is_file()
    md = r.report["markdown"].read_text()
    assert "Quick mode" in md and "## Gamma sweep" in md and "## Eps sweep" in md
    assert "## Comparison with the paper" in md
    assert "sgm+di" in r.matrix and "white-box" in r.matrix
    # gamma 1 is I-FGSM exactly: the sweep's gamma=1 SGM cell matches I-FGSM image for image
    rec = json.loads((r.runs["gamma-sweep"] / "results.json").read_text())
    p1 = [p for p in rec["paired"] if p["attack"] == "sgm" and p["gamma"] == 1.0]
    assert p1 and all(p["only_attack"] == 0 and p["only_baseline"] == 0 for p in p1)
    # finished runs are reused
    again = reproduce_sgm(tmp_path / "sgm", quick=True, models_dir=zoo_dir, n=4, seeds=[0], targets=targets,
                          overrides=over)
    assert again.matrix == r.matrix


def test_imagenet_dry_run_reports_what_is_missing(tmp_path):
    folder = tmp_path / "imagenet" / "val"
    folder.mkdir(parents=True)
    r = reproduce_sgm_imagenet(dry_run=True, data_dir=tmp_path / "imagenet", out=tmp_path / "out")
    assert not r["ready"]
    items = {c["item"]: c for c in r["checks"]}
    assert items["experiment config"]["ok"]
    assert not items["ImageNet validation folder"]["ok"] and "0 images" in items["ImageNet validation folder"]["detail"]
    assert not items["torchvision resnet152 weights"]["ok"]
    assert any(m.startswith("package torchvision") for m in r["missing"]) or items["package torchvision"]["ok"]
    assert (tmp_path / "out" / "dry_run.json").is_file()
    none = reproduce_sgm_imagenet(dry_run=True)
    assert not none["ready"] and any("ImageNet validation folder" in m for m in none["missing"])
    with pytest.raises(ValueError, match="missing"):
        reproduce_sgm_imagenet(dry_run=False, data_dir=tmp_path / "imagenet", out=tmp_path / "out")
    cfg = imagenet_config()
    assert cfg["eps"] == ["16/255"] and cfg["steps"] == 10 and cfg["alpha"] == "2/255"
    assert cfg["sample"]["n"] == 5000 and cfg["gamma"] == {"residual": 0.2, "dense": 0.5}


def test_cli_hook(tiny_zoo, tmp_path):  # noqa: F811
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """advkit (test app)."""

    register_cli(app)
    runner = CliRunner()
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump(tiny_config(tiny_zoo, seeds=[0])))
    res = runner.invoke(app, ["transfer", str(exp), "--out", str(tmp_path / "run"), "--set", "attacks=ifgsm",
                              "--set", "sample.n=4"])
    assert res.exit_code == 0, res.output
    assert "transfer success (%) at eps 16/255 (L-inf), 4 images" in res.output and "report:" in res.output
    res = runner.invoke(app, ["transfer", str(exp), "--out", str(tmp_path / "run"), "--set", "attacks=ifgsm",
                              "--set", "sample.n=4"])
    assert res.exit_code == 2 and "force" in res.output
    bad = runner.invoke(app, ["transfer", str(exp), "--out", str(tmp_path / "x"), "--set", "attacks=[ifgsm, foo]"])
    assert bad.exit_code == 2 and "attacks[1].name: unknown attack part 'foo'" in bad.output
    res = runner.invoke(app, ["report", str(tmp_path / "run")])
    assert res.exit_code == 0 and "report.html" in res.output
    res = runner.invoke(app, ["reproduce", "sgm-imagenet", "--dry-run"])
    assert res.exit_code == 0 and "missing" in res.output


def test_parse_overrides():
    assert parse_overrides(["sample.n=50", "eps=[8/255, 16/255]", "sources=a,b", "gamma=0.5"]) == \
        {"sample.n": 50, "eps": ["8/255", "16/255"], "sources": ["a", "b"], "gamma": 0.5}
    with pytest.raises(typer.BadParameter):
        parse_overrides(["novalue"])
