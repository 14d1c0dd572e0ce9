"""Issue 25: ensembles in experiment files, the hold-out protocol, and SGM's ``gamma: auto`` per ensemble member.

Runs on the tiny seeded zoo of tests/test_transfer.py, plus a second residual model whose card tunes its own SGM
decay (so that an ensemble of the two has two different ``auto`` decays).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from advkit.report.run_report import build_report
from advkit.study.config import ConfigError, load_config
from advkit.study.plan import cell_id, plan_cells
from advkit.study.runner import run_study
from advkit.study.runstate import RunDir
from tests.test_transfer import make_tiny_zoo, tiny_config


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory, fmnist_test) -> dict[str, str]:
    """tres (ResNet-20, no tuned decay: auto is 0.2), tlin (linear), tres7 (ResNet-20, card sgm_gamma 0.7)."""
    from advkit.models import Classifier, get_arch, save_checkpoint

    folder = tmp_path_factory.mktemp("zoo25")
    out = make_tiny_zoo(folder)
    torch.manual_seed(2)
    spec = get_arch("resnet20")
    model = Classifier(spec.build(1, 10, 28), (0.286,), (0.353,), (1, 28, 28), 10, name="tres7")
    path = folder / "tres7.safetensors"
    save_checkpoint(model, path, {"arch": "resnet20", "name": "tres7", "input_shape": [1, 28, 28], "num_classes": 10,
                                  "mean": [0.286], "std": [0.353], "connections": spec.connections,
                                  "dataset": "fashion-mnist", "sgm_gamma": 0.7})
    out["tres7"] = str(path)
    return out


def _holdout(zoo: dict[str, str], **over: object) -> dict:
    cfg = tiny_config(zoo, targets=[zoo["tres"], zoo["tlin"], zoo["tres7"]], attacks=["ifgsm"], steps=2,
                      save_png=0, holdout=True)
    del cfg["sources"]
    cfg.update(over)
    return cfg


def test_holdout_plans_one_cell_per_target_with_the_ensemble_of_the_others(zoo):
    cfg = load_config(_holdout(zoo, attacks=["ifgsm", "mi"]))
    a, b, c = zoo["tres"], zoo["tlin"], zoo["tres7"]
    expected = {f"ensemble:{b}+{c}": a, f"ensemble:{a}+{c}": b, f"ensemble:{a}+{b}": c}
    assert cfg.sources == tuple(expected)
    cells = plan_cells(cfg, {})
    assert len(cells) == 3 * 2 * 1 * 2  # targets x attacks x eps x seeds
    for cell in cells:
        assert cell.models == (cell.source, expected[cell.source])  # white-box, then the target it leaves out
    assert load_config(cfg.to_dict()) == cfg  # the file form reads back (holdout: true, no sources)
    assert cfg.to_dict()["sources"] == [] and cfg.to_dict()["holdout"] is True


def test_holdout_run_reports_each_target_against_its_own_hold_out_ensemble(zoo, tmp_path):
    res = run_study(_holdout(zoo), tmp_path / "run", command="pytest i25 holdout")
    rec = res.records
    pairs = {"hold-out ensemble (all but tres)": "tres", "hold-out ensemble (all but tlin)": "tlin",
             "hold-out ensemble (all but tres7)": "tres7"}
    assert rec["meta"]["holdout"] == pairs
    seen = {(r["source"], r["target"], r["white_box"]) for r in rec["success"]}
    assert seen == {(s, t, False) for s, t in pairs.items()} | {(s, s, True) for s in pairs}
    doc = build_report(res.run_dir)
    text = json.dumps(doc, default=lambda o: getattr(o, "__dict__", str(o)))
    assert "Hold-out ensembles" in text
    for s, t in pairs.items():
        assert f"{s} -> {t}" in text


def test_sources_with_holdout_and_too_few_targets_are_refused(zoo):
    with pytest.raises(ConfigError, match="holdout: true derives the sources.*remove sources"):
        load_config(_holdout(zoo, sources=[zoo["tres"]]))
    with pytest.raises(ConfigError, match="at least three targets"):
        load_config(_holdout(zoo, targets=[zoo["tres"], zoo["tlin"]]))


def test_the_mapping_form_is_the_ensemble_name_and_weights_are_kept(zoo, tmp_path):
    a, b = zoo["tres"], zoo["tlin"]
    plain = load_config(tiny_config(zoo, sources=[{"ensemble": [a, b], "fuse": "logits"}]))
    assert plain.sources == (f"ensemble:{a}+{b}",)
    assert plain.digest() == load_config(tiny_config(zoo, sources=[f"ensemble:{a}+{b}"])).digest()
    probs = load_config(tiny_config(zoo, sources=[{"ensemble": [a, b], "fuse": "probs"}]))
    assert probs.sources == (f"ensemble:{a}+{b}@probs",)
    weighted = tiny_config(zoo, sources=[{"ensemble": [a, b], "weights": [3, 1]}], targets=[a, b], attacks=["ifgsm"],
                           seeds=[0], save_png=0)
    cfg = load_config(weighted)
    assert cfg.sources == (f"ensemble:{a}+{b}@logits[3,1]",)
    res = run_study(cfg, tmp_path / "w", command="pytest i25 weights")
    meta = RunDir(res.run_dir).shard_meta(res.records["cells"][0]["id"], 0)
    assert meta is not None and meta["source"] == cfg.sources[0]
    from advkit.study.cells import load_models

    built = load_models([cfg.sources[0]], "fashion-mnist", "cpu")[cfg.sources[0]]
    assert built.weights == pytest.approx((0.75, 0.25)) and built.fuse == "logits"
    with pytest.raises(ConfigError, match=r"sources\[0\]\.weights: expected one number"):
        load_config(tiny_config(zoo, sources=[{"ensemble": [a, b], "weights": [1]}]))
    with pytest.raises(ConfigError, match=r"sources\[0\]\.fuse"):
        load_config(tiny_config(zoo, sources=[{"ensemble": [a, b], "fuse": "mean"}]))


def test_an_ensemble_cell_id_names_its_members():
    cid = cell_id("ensemble:/z/tres.safetensors+/z/tlin.safetensors", "mi", "16/255", None, 0)
    assert cid.startswith("ensemble-tres+tlin__mi__")
    assert cell_id("/z/tres.safetensors", "mi", "16/255", 0.2, 0).startswith("tres__mi__eps16-255__g0.2__s0__")


def test_gamma_auto_on_an_ensemble_source_is_each_members_own(zoo, tmp_path):
    src = {"ensemble": [zoo["tres"], zoo["tres7"]]}
    cfg = tiny_config(zoo, sources=[src], targets=[zoo["tlin"]], attacks=["sgm"], steps=2, seeds=[0], save_png=0)
    res = run_study(cfg, tmp_path / "g", command="pytest i25 gamma")
    (cell,) = res.records["cells"]
    assert cell["gamma"] == "auto" and "__gauto__" in cell["id"]
    assert cell["sgm_gammas"] == {"tres": 0.2, "tres7": 0.7}  # not one decay for both
    meta = RunDir(res.run_dir).shard_meta(cell["id"], 0)
    assert meta is not None and [m["gamma"] for m in meta["info"]["sgm"]["members"]] == [0.2, 0.7]
    assert "sgm (γ=auto)" in json.dumps(build_report(res.run_dir), default=lambda o: getattr(o, "__dict__", str(o)),
                                         ensure_ascii=False)
    single = plan_cells(load_config(tiny_config(zoo, attacks=["sgm"])), {zoo["tres"]: "residual"})
    assert {c.gamma for c in single} == {0.2}  # one model: still a number
    assert Path(res.run_dir, "results", "cells.csv").is_file()
