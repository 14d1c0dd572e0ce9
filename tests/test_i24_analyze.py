"""Issue 24: the analyses have the reproductions' shape: registered (name, description, checked settings, inputs),
one ``advkit analyze NAME INPUT...`` command with ``--list``, the one run-folder rule, progress through ProgressFn."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from advkit.analysis.settings import ClustersSettings, SurrogatesSettings
from advkit.cli import app
from advkit.reproduce.analyses import ANALYSES, get_analysis
from advkit.study.runner import run_study
from tests.test_transfer import make_tiny_zoo, tiny_config

runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("analyze")
    zoo = make_tiny_zoo(root)
    return run_study(tiny_config(zoo, attacks=["ifgsm"], seeds=[0], sample={"n": 6, "only_correct": False}),
                     root / "transfer").run_dir


def test_list_shows_the_three_analyses_with_their_settings():
    r = runner.invoke(app, ["analyze", "--list"])
    assert r.exit_code == 0, r.output
    assert set(ANALYSES) == {"clusters", "surrogates", "perception"}
    for line in ("clusters RUN_DIR:", "surrogates RUN_DIR...:", "perception JSMA_RUN:", "k_max = 10",
                 "silhouette_sample = 4000", "knowledge = skip", "bootstrap = 2000", "reference = train"):
        assert line in r.output, line


def test_an_unknown_setting_or_analysis_lists_the_valid_names(tmp_path):
    r = runner.invoke(app, ["analyze", "surrogates", str(tmp_path), "--out", str(tmp_path / "o"), "--set", "boot=9"])
    assert r.exit_code == 2
    assert ("unknown setting(s) 'boot' (did you mean 'bootstrap'?); the settings are: targets, eps, selection, seed, "
            "bootstrap, knowledge (see `advkit analyze --list`)") in flat(r.output)
    r = runner.invoke(app, ["analyze", "clusters", str(tmp_path), "--kmax", "3"])  # an old-style flag, misspelt
    assert r.exit_code == 2 and "unknown setting(s) 'kmax' (did you mean 'k_max'?)" in flat(r.output)
    r = runner.invoke(app, ["analyze", "cluster", str(tmp_path)])
    assert r.exit_code == 2 and "choose one of: clusters, perception, surrogates" in flat(r.output)
    assert not (tmp_path / "analysis").exists() and not (tmp_path / "o").exists()


def test_settings_checks_name_the_setting_and_the_fix():
    with pytest.raises(ValueError, match=r"k_min must be >= 2, got 1 \(--set k_min=N or --k-min N\)"):
        ClustersSettings(k_min=1)
    with pytest.raises(ValueError, match=r"selection must be a share in \(0, 1\), got 1.0 \(--set selection=0.5\)"):
        get_analysis("surrogates").make_settings(changes={"selection": "1"})
    with pytest.raises(ValueError, match="--knowledge must be one of skip, layers, got 'size'"):
        SurrogatesSettings(knowledge="size")
    assert get_analysis("surrogates").make_settings(changes={"targets": ["lenet"]}).targets == ("lenet",)


def test_surrogates_needs_an_output_folder(run_dir):
    r = runner.invoke(app, ["analyze", "surrogates", str(run_dir)])
    assert r.exit_code == 2 and "--out: give an output folder for surrogates" in flat(r.output)


def test_the_folder_rule_on_clusters(run_dir, tmp_path):
    out = run_dir / "analysis" / "clusters"
    r = runner.invoke(app, ["analyze", "clusters", str(run_dir), "--k-max", "3", "--components", "4"])
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "analysis.json").read_text())
    assert manifest["analysis"] == "clusters" and manifest["status"] == "finished"
    assert manifest["settings"]["k_max"] == 3 and manifest["input_runs"] == [str(run_dir.resolve())]
    assert (out / "report.md").is_file() and "<table" in (out / "report.html").read_text()
    first = (out / "clusters.json").read_text()
    # a finished run is refused, naming --force; --force starts over with the same numbers
    r = runner.invoke(app, ["analyze", "clusters", str(run_dir), "--set", "k_max=3", "--set", "components=4"])
    assert r.exit_code == 2 and "already holds a finished clusters run" in flat(r.output) and "--force" in r.output
    r = runner.invoke(app, ["analyze", "clusters", str(run_dir), "--set", "k_max=3", "--set", "components=4",
                            "--force"])
    assert r.exit_code == 0, r.output
    assert (out / "clusters.json").read_text() == first
    # a folder advkit did not write is refused; --force writes beside its files and deletes none
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    r = runner.invoke(app, ["analyze", "clusters", str(run_dir), "--k-max", "3", "--out", str(foreign)])
    assert r.exit_code == 2 and "holds no advkit analysis (analysis.json is missing)" in flat(r.output)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    r = runner.invoke(app, ["analyze", "clusters", str(run_dir), "--k-max", "3", "--components", "4", "--out",
                            str(foreign), "--force"])
    assert r.exit_code == 0, r.output
    assert (foreign / "notes.txt").read_text() == "keep me" and (foreign / "clusters.json").read_text() == first


def test_progress_gets_stage_done_total_detail(run_dir, tmp_path):
    calls: list[tuple] = []
    outcome = get_analysis("clusters").run(
        [run_dir], tmp_path / "c", get_analysis("clusters").make_settings(changes={"k_max": 3}),
        progress=lambda stage, done, total, detail: calls.append((stage, done, total, detail)))
    assert calls == [("k-means", 0, 1, "eps 16/255"), ("k-means", 1, 1, "")]
    assert outcome.files == {"markdown": tmp_path / "c" / "report.md", "html": tmp_path / "c" / "report.html"}
    assert outcome.result[0].eps == "16/255" and outcome.lines[0].startswith("eps 16/255: 6 perturbations")
