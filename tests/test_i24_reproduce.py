"""Issue 24: one shape for every reproduction (registered name, settings, quick variant, one run-folder rule,
manifest and report.md / report.html, progress through ProgressFn) and one ``advkit reproduce NAME`` command."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from advkit.cli import app
from advkit.report.html import Document, Para, Table
from advkit.reproduce import REPRODUCTIONS
from advkit.reproduce.registry import Outcome, Reproduction, RunContext, register
from advkit.study.errors import RunExistsError

runner = CliRunner()
BUILT_IN = ("cross-domain", "fgsm", "jsma", "jsma-defence", "sgm", "sgm-imagenet")


def flat(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- a toy reproduction: one file's worth
@dataclass(frozen=True)
class ToySettings:
    """n: items counted; label: a word in the report; fail_at: raise after this many items (a crash)."""

    n: int = 5
    label: str = "toy"
    fail_at: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}; --set n=5")


def _toy(out: Path, s: ToySettings, run: RunContext) -> Outcome:
    done = sorted(int(p.stem) for p in out.glob("*.item"))  # resumes: items already written are skipped
    for i in range(s.n):
        if i in done:
            continue
        if s.fail_at is not None and i == s.fail_at:
            raise KeyboardInterrupt
        (out / f"{i}.item").write_text(str(i * i))
        if run.progress is not None:
            run.progress("items", i + 1, s.n, f"item {i}")
    total = sum(int((out / f"{i}.item").read_text()) for i in range(s.n))
    doc = Document(f"Toy reproduction ({s.label})").add(Para(f"sum of squares below {s.n}"),
                                                        Table(["n", "sum"], [[str(s.n), str(total)]]))
    return Outcome(doc, [f"sum {total}"], {"sum": total, "resumed": done})


@pytest.fixture()
def toy():
    r = register(Reproduction("toy", "A toy: sums squares.", ToySettings, {"n": 2}, _toy))
    yield r
    del REPRODUCTIONS["toy"]


# ---------------------------------------------------------------- tests
def test_list_shows_every_registered_reproduction_with_its_settings(toy):
    r = runner.invoke(app, ["reproduce", "--list"])
    assert r.exit_code == 0, r.output
    for name in (*BUILT_IN, "toy"):
        assert f"{name}: {REPRODUCTIONS[name].description.split()[0]}" in r.output
    assert "n = 5 (--quick: 2)" in r.output and "label = toy" in r.output
    assert "craft_images = 10000 (--quick: 1000)" in r.output  # a built-in's defaults and quick variant


def test_unknown_setting_is_refused_naming_the_valid_ones(toy, tmp_path):
    r = runner.invoke(app, ["reproduce", "toy", "--set", "m=3", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "unknown setting(s) 'm'; the settings are: n, label, fail_at" in flat(r.output)
    r = runner.invoke(app, ["reproduce", "jsma", "--set", "sample=3", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "the settings are: dataset, model, samples, splits" in flat(r.output)
    r = runner.invoke(app, ["reproduce", "toy", "--set", "n=0", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "n must be >= 1, got 0; --set n=5" in flat(r.output)
    r = runner.invoke(app, ["reproduce", "nosuch", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "unknown reproduction 'nosuch'; choose one of: cross-domain" in flat(r.output)
    assert not (tmp_path / "o").exists()


def test_toy_runs_through_the_cli_with_manifest_and_both_reports(toy, tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, ["reproduce", "toy", "--quick", "--set", "label=hello", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "sum 1" in r.output and f"report: {out / 'report.html'}" in flat(r.output)
    m = json.loads((out / "reproduction.json").read_text())
    assert m["reproduction"] == "toy" and m["status"] == "finished"
    assert m["settings"] == {"n": 2, "label": "hello", "fail_at": None}
    assert m["advkit_version"] and m["torch_version"] and m["command"].startswith("advkit reproduce toy")
    assert "# Toy reproduction (hello)" in (out / "report.md").read_text()
    assert "<h1>Toy reproduction (hello)</h1>" in (out / "report.html").read_text()
    # the same command again: a finished run is refused, naming --force
    r = runner.invoke(app, ["reproduce", "toy", "--quick", "--set", "label=hello", "--out", str(out)])
    assert r.exit_code == 2 and "already holds a finished toy run" in flat(r.output) and "--force" in r.output
    r = runner.invoke(app, ["reproduce", "toy", "--quick", "--set", "label=hello", "--out", str(out), "--force"])
    assert r.exit_code == 0 and "sum 1" in r.output


def test_foreign_folder_is_refused_and_force_writes_beside_its_files(toy, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    r = runner.invoke(app, ["reproduce", "toy", "--out", str(out)])
    assert r.exit_code == 2 and "is not empty and holds no advkit reproduction" in flat(r.output)
    assert "--force" in r.output and sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    r = runner.invoke(app, ["reproduce", "toy", "--out", str(out), "--force"])
    assert r.exit_code == 0, r.output
    assert (out / "notes.txt").read_text() == "my notes" and (out / "report.html").is_file()
    # another reproduction's folder, or other settings: refused
    r = runner.invoke(app, ["reproduce", "toy", "--set", "n=3", "--out", str(out)])
    assert r.exit_code == 2 and "with other settings (n differ)" in flat(r.output)
    with pytest.raises(RunExistsError, match="reproduction 'toy', not 'fgsm'"):
        REPRODUCTIONS["fgsm"].run(out)


def test_interrupted_run_resumes_and_force_starts_over(toy, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        toy.run(out, ToySettings(n=4, fail_at=2))
    assert json.loads((out / "reproduction.json").read_text())["status"] == "running"
    with pytest.raises(RunExistsError, match="other settings"):
        toy.run(out, ToySettings(n=4))  # fail_at differs: not the same run
    m = out / "reproduction.json"
    m.write_text(m.read_text().replace('"fail_at": 2', '"fail_at": null'))
    again = toy.run(out, ToySettings(n=4))
    assert again.result == {"sum": 0 + 1 + 4 + 9, "resumed": [0, 1]}
    fresh = toy.run(out, ToySettings(n=4), force=True)
    assert fresh.result["resumed"] == [] and fresh.result["sum"] == 14


def test_progress_receives_stage_done_total_detail(toy, tmp_path):
    calls = []
    toy.run(tmp_path / "run", toy.make_settings(quick=True), progress=lambda *a: calls.append(a))
    assert calls == [("items", 1, 2, "item 0"), ("items", 2, 2, "item 1")]


def test_a_run_that_fails_before_any_work_leaves_nothing(tmp_path):
    out = tmp_path / "x"
    r = runner.invoke(app, ["reproduce", "cross-domain", "--out", str(out), "--datasets", "fashion-mnist,cifar10"])
    assert r.exit_code == 2 and "--resize" in r.output and not out.exists()


def test_registering_a_name_twice_or_bad_defaults_is_refused(toy):
    with pytest.raises(ValueError, match="already registered"):
        register(Reproduction("toy", "again", ToySettings, {}, _toy))
    with pytest.raises(ValueError, match="n must be >= 1"):
        register(Reproduction("toy2", "bad quick", ToySettings, {"n": 0}, _toy))
    assert "toy2" not in REPRODUCTIONS


def test_old_flags_map_to_settings():
    from advkit.cli.reproduce import flag_settings
    from advkit.reproduce.cross_domain import CROSS_DOMAIN
    from advkit.reproduce.jsma_sets import JSMA

    base = JSMA.make_settings()
    got = flag_settings(["--samples", "3", "--split", "test[:40]", "--split=test[40:80]"], JSMA.settings, base)
    s = JSMA.make_settings(changes=got)
    assert s.samples == 3 and s.splits == ("test[:40]", "test[40:80]")
    base = CROSS_DOMAIN.make_settings(quick=True)
    got = flag_settings(["--eps", "16/255", "--no-resize", "--target", "mnist=lenet,maxout"], CROSS_DOMAIN.settings,
                        base)
    s = CROSS_DOMAIN.make_settings(True, got)
    assert s.eps == 16 / 255 and s.resize is False and s.targets["mnist"] == ("lenet", "maxout")
    assert s.targets["fashion-mnist"] == base.targets["fashion-mnist"]
