"""Issue 23: long commands show progress: rich bars on a terminal, one line per step in a log."""

from __future__ import annotations

import io

from rich.console import Console
from typer.testing import CliRunner

from advkit.cli import app, common

runner = CliRunner()


def _lines(monkeypatch, every: float, calls) -> list[str]:
    buf = io.StringIO()
    monkeypatch.setattr(common, "err", Console(file=buf, width=200))
    clock = iter(range(0, 10_000, 1))  # one second per call to the clock
    monkeypatch.setattr(common.time, "monotonic", lambda: float(next(clock)))
    with common.Bars(terminal=False, every=every) as bar:
        for c in calls:
            bar(*c)
    return buf.getvalue().splitlines()


def test_bars_in_a_log_write_a_line_per_step_at_most_every_few_seconds(monkeypatch):
    calls = [("cells", i, 10, f"cell {i}") for i in range(11)]
    lines = _lines(monkeypatch, every=3.0, calls=calls)
    # the first step, then one line every 3 s of the fake clock, and always the finishing step
    assert lines[0].startswith("cells cell 0: 0/10")
    assert lines[-1].startswith("cells cell 10: 10/10")
    assert 3 <= len(lines) <= 6
    everything = _lines(monkeypatch, every=0.0, calls=calls)
    assert len(everything) == 11
    assert [ln.split(": ")[1].split(" ")[0] for ln in everything] == [f"{i}/10" for i in range(11)]


def test_bars_keep_stages_apart_and_skip_unchanged_steps(monkeypatch):
    calls = [("a", 1, 2, ""), ("b", 1, 5, ""), ("a", 1, 2, ""), ("a", 2, 2, ""), ("b", 5, 5, "")]
    lines = _lines(monkeypatch, every=0.0, calls=calls)
    assert [ln.rsplit(" (", 1)[0] for ln in lines] == ["a: 1/2", "b: 1/5", "a: 2/2", "b: 5/5"]


def test_a_query_attack_reports_its_queries_in_a_log(tmp_path):
    # before: nothing at all until the end (20 minutes and more for square on a loaded machine)
    r = runner.invoke(app, ["attack", "square", "--model", "lenet", "--eps", "0.1", "--limit", "12",
                            "--max-queries", "40", "--seed", "0"])
    assert r.exit_code == 0, r.output
    queries = [ln for ln in r.output.splitlines() if "queries per image, this batch:" in ln]
    assert queries, r.output
    spent = [int(ln.split("batch: ")[1].split("/")[0]) for ln in queries]
    assert spent == sorted(spent) and spent[-1] <= 40
    assert any("images:" in ln and "/" in ln for ln in r.output.splitlines())


def test_evaluate_all_reports_each_model_in_a_log():
    r = runner.invoke(app, ["evaluate", "--all", "--limit", "20"])
    assert r.exit_code == 0, r.output
    done = [ln for ln in r.output.splitlines() if ln.startswith("evaluated ")]
    assert done[0].startswith("evaluated on 20 fashion-mnist test images: 0/")
    n = int(done[0].split("/")[1].split(" ")[0])
    assert len(done) == n + 1  # one line per model, plus the start
    assert done[-1].split(": ")[-1].startswith(f"{n}/{n}")
