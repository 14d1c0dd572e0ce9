"""`advkit analyze clusters`: PCA + k-means (k by silhouette) over a finished run's perturbations."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from advkit.analysis.clusters import cluster_perturbations
from advkit.cli import app
from advkit.study.runner import run_study
from tests.test_transfer import make_tiny_zoo, tiny_config


def _synthetic(n_per: int = 40, seed: int = 0) -> dict:
    """Two attacks with different perturbation shapes (left half vs right half of the image) plus noise."""
    rng = np.random.default_rng(seed)
    delta, rows = [], []
    for a, half in (("left", slice(0, 14)), ("right", slice(14, 28))):
        for i in range(n_per):
            d = rng.normal(0, 0.005, (1, 28, 28)).astype(np.float32)
            d[:, :, half] += 0.05
            delta.append(d)
            rows.append({"eps": "0.05", "attack": a, "source": "s", "seed": 0, "cell": a, "label": i % 10,
                         "image": i, "fooled": int(a == "left"), "targets": 1, "transfer": float(a == "left")})
    return {"delta": np.stack(delta), "rows": rows}


def test_distinct_perturbations_are_found_and_described():
    data = _synthetic()
    (r,) = cluster_perturbations("unused", data=data, k_min=2, k_max=6, components=10)
    assert r.k == 2 and r.silhouette[2] == max(r.silhouette.values()) and sorted(r.silhouette) == [2, 3, 4, 5, 6]
    assert r.purity_attack == 1.0 and r.adjusted_rand_attack == pytest.approx(1.0)
    assert sorted(c["size"] for c in r.clusters) == [40, 40]
    for c in r.clusters:
        members = r.labels == c["cluster"]
        assert np.allclose(r.mean_perturbation[c["cluster"]], data["delta"][members].mean(0), atol=1e-6)
        assert c["transfer"] == (1.0 if c["majority_attack"] == "left" else 0.0)
        assert c["transfer_low"] - 1e-9 <= c["transfer"] <= c["transfer_high"] + 1e-9


def test_a_real_run_end_to_end(tmp_path):
    zoo = make_tiny_zoo(tmp_path)
    run = run_study(tiny_config(zoo, attacks=["ifgsm", "mi", "pgd"], seeds=[0, 1], save_png=0), tmp_path / "run")
    r = CliRunner().invoke(app, ["analyze", "clusters", str(run.run_dir), "--k-max", "5", "--components", "8"])
    assert r.exit_code == 0, r.output
    out = run.run_dir / "analysis" / "clusters"
    for f in ("report.md", "clusters.json", "clusters.csv", "silhouette.csv", "manifest.json",
              "figures/silhouette_16-255.png", "figures/mean_perturbation_16-255.png"):
        assert (out / f).is_file(), f
    (rec,) = json.loads((out / "clusters.json").read_text())
    assert rec["n"] == 3 * 2 * 8 and sum(c["size"] for c in rec["clusters"]) == rec["n"]
    assert 2 <= rec["k"] <= 5 and rec["silhouette"][str(rec["k"])] == max(rec["silhouette"].values())
    for c in rec["clusters"]:
        assert sum(c["attacks"].values()) == c["size"] == sum(c["sources"].values())
        assert c["purity"] == max(c["attacks"].values()) / c["size"]
    assert "| cluster | size | attacks |" in (out / "report.md").read_text()


def test_bad_runs_and_settings_are_refused(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["analyze", "clusters", str(tmp_path)])
    assert r.exit_code == 2 and "not a finished transfer run" in r.output
    r = runner.invoke(app, ["analyze", "clusters", str(tmp_path), "--k-min", "5", "--k-max", "3"])
    assert r.exit_code == 2 and "below --k-min" in " ".join(r.output.split())
    with pytest.raises(ValueError, match="eps '8/255' is not in this run; its eps: 0.05"):
        cluster_perturbations("unused", data=_synthetic(), eps="8/255")
