"""The JSMA reproduction and class-pair study: tables consistent with the records, atomic output."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import advkit.reproduce.jsma as report_module
import advkit.reproduce.jsma as study_module
from advkit.attacks.saliency.jsma import JSMA
from advkit.reproduce.jsma import reproduce_jsma, save_study
from tests.test_jsma import tiny_model


@pytest.fixture(scope="module")
def study():
    model = tiny_model(seed=5, c=1, side=6, k=4)
    g = torch.Generator().manual_seed(0)
    data = SimpleNamespace(x=torch.rand(12, 1, 6, 6, generator=g), y=torch.arange(12) % 4, classes=("a", "b", "c", "d"),
                           name="toy", split="test", note="a toy split")
    return reproduce_jsma(model, data, n_samples=8, attack=JSMA(upsilon=0.2), chunk=10)


def test_tables_agree_with_records(study):
    recs = study.records
    assert len(recs) == 8 * 3 and study.x_adv.shape == (24, 1, 6, 6)
    assert study.success.shape == study.distortion.shape == (4, 4)
    assert np.isnan(np.diag(study.success)).all() and np.isnan(np.diag(study.distortion)).all()
    for s in range(4):
        for t in range(4):
            rows = [r for r in recs if r["source"] == s and r["target"] == t]
            assert study.attempts[s, t] == len(rows)
            if s != t and rows:
                assert study.success[s, t] == pytest.approx(np.mean([r["success"] for r in rows]))
                won = [r["share"] for r in rows if r["success"]]
                if won:
                    assert study.distortion[s, t] == pytest.approx(np.mean(won))
    ok = [r for r in recs if r["success"]]
    assert study.summary["success_rate"] == pytest.approx(len(ok) / len(recs))
    assert study.summary["distortion_successful"] == pytest.approx(np.mean([r["share"] for r in ok]))
    assert all(r["share"] <= 0.2 and r["share"] == r["modified"] / 36 for r in recs)
    assert all(r["success"] == (r["pred"] == r["target"]) for r in recs)
    assert study.summary["n_samples"] == 8 and study.summary["note"] == "a toy split"
    assert len(study.pair_records()) == 12


def test_samples_are_evenly_spaced():
    assert study_module._select(1000, 10).tolist() == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    assert study_module._select(5, None).tolist() == [0, 1, 2, 3, 4]


def test_save_is_atomic_and_complete(study, tmp_path, monkeypatch):
    out = save_study(study, tmp_path / "run", extra={"detector": {"auc_jsma": float("nan")}})
    names = sorted(p.name for p in out.iterdir())
    assert names == ["adversarial.safetensors", "distortion_heatmap.png", "pairs.csv", "records.csv",
                     "report.html", "report.md", "results.json", "success_heatmap.png"]
    res = json.loads((out / "results.json").read_text())  # strict JSON: NaN written as null
    assert res["success"][0][0] is None and res["extra"]["detector"]["auc_jsma"] is None
    assert res["summary"]["n_attacks"] == 24
    with open(out / "records.csv") as f:
        assert len(list(csv.DictReader(f))) == 24
    assert (out / "success_heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "97%" in md and "4.02%" in md and "a toy split" in md
    with pytest.raises(FileExistsError):
        save_study(study, out)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report_module, "heatmap", broken)
    with pytest.raises(RuntimeError):
        save_study(study, tmp_path / "second")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing half-written, no temp folder left
