"""Issue 23, the transfer study's experiment files and tables: a key given twice is an error (YAML and JSON), every
table says the norm of its budget and one eps list never mixes norms, and rerunning a ``--no-report`` run says so.

The run tests use the tiny seeded zoo of ``tests/test_transfer.py`` (8 Fashion-MNIST images, a second or two).
"""

from __future__ import annotations

import csv
import json
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from advkit.cli import app
from advkit.report.tables import budgets, matrix_table, paired_table, text_matrix
from advkit.study.config import ConfigError, load_config
from advkit.study.plan import plan_cells
from tests.test_transfer import make_tiny_zoo, tiny_config

BASE = {"dataset": "fashion-mnist", "sources": ["resnet20"], "targets": ["lenet"], "attacks": ["ifgsm"],
        "eps": ["16/255"]}


def _problems(source: object) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config(source)  # type: ignore[arg-type]
    return e.value.problems


# --- 1. a key given twice ------------------------------------------------------------------------------------------

def test_a_yaml_key_given_twice_names_the_key_and_both_lines(tmp_path):
    p = tmp_path / "exp.yaml"
    p.write_text(textwrap.dedent("""\
        dataset: fashion-mnist
        sources: [resnet20]
        targets: [lenet]
        attacks: [ifgsm, {name: sgm, settings: {gamma: 0.2, gamma: 0.5}}]
        eps: ["16/255"]
        sample:
          n: 5
          n: 7
        eps: [0.1]
        """))
    probs = _problems(p)
    assert len(probs) == 3, probs
    assert any(x.startswith(f"(file {p}) eps: given twice, on lines 5 and 9") for x in probs), probs
    assert any(x.startswith(f"(file {p}) sample.n: given twice, on lines 7 and 8") for x in probs), probs
    assert any("attacks[1].settings.gamma: given twice, on line 4" in x for x in probs), probs
    p.write_text(yaml.safe_dump({k: v for k, v in BASE.items() if k != "attacks"})
                 + "attacks:\n  - &sgm {name: sgm, settings: {gamma: 0.2}}\n"
                 + "  - {<<: *sgm, label: sgm-b, settings: {gamma: 0.5}}\n")
    cfg = load_config(p)  # "settings" overrides the merged one: YAML's override, not a key given twice
    assert [(a.label, a.settings["gamma"]) for a in cfg.attacks] == [("sgm", 0.2), ("sgm-b", 0.5)]


def test_a_json_key_given_twice_names_the_key_and_both_lines(tmp_path):
    p = tmp_path / "exp.json"
    p.write_text('{"dataset": "fashion-mnist", "sources": ["resnet20"], "targets": ["lenet"],\n'
                 '\t"attacks": ["ifgsm"], "eps": ["16/255"],\n'
                 '\t"sample": {"n": 5,\n'
                 '\t           "n": 7}}\n')
    probs = _problems(p)
    assert probs == [f"(file {p}) sample.n: given twice, on lines 3 and 4; keep one (JSON readers silently keep the "
                     f"last)"]
    p.write_text(json.dumps({**BASE, "sample": {"n": 5}}))  # a JSON file is read as JSON
    assert load_config(p).sample.n == 5


# --- 2. norms ----------------------------------------------------------------------------------------------------

def test_one_eps_list_for_attacks_of_two_norms_is_refused_with_the_fix():
    probs = _problems({**BASE, "attacks": ["ifgsm", "mi", "hsj"], "eps": [0.1]})
    assert len(probs) == 1, probs
    assert probs[0].startswith("attacks[2]: hsj bounds eps in L2 but shares the eps list ['0.1'] with L-inf "
                               "attacks (ifgsm, mi)"), probs
    assert "{name: hsj, eps: [...]}" in probs[0] and "settings: {norm: linf}" in probs[0]
    # the fixes: the L2 attack's own budgets, or the L-inf ball for it
    cfg = load_config({**BASE, "attacks": ["ifgsm", {"name": "hsj", "eps": [0.5, "1"]}], "eps": [0.1]})
    assert [(a.label, a.norm) for a in cfg.attacks] == [("ifgsm", "linf"), ("hsj", "l2")]
    cells = plan_cells(cfg, {"resnet20": "residual"})
    assert [(c.label, c.norm, c.eps) for c in cells] == [("ifgsm", "linf", "0.1"), ("hsj", "l2", "0.5"),
                                                         ("hsj", "l2", "1")]
    assert load_config({**BASE, "attacks": ["ifgsm", {"name": "hsj", "settings": {"norm": "linf"}}]}).attacks[1].norm \
        == "linf"


def test_an_attacks_own_budgets_plan_its_cells_and_read_back():
    cfg = load_config({**BASE, "attacks": ["ifgsm", {"name": "hsj", "eps": [1.5]}], "eps": ["8/255", "16/255"]})
    cells = plan_cells(cfg, {"resnet20": "residual"})
    assert [(c.attack.label, c.eps, c.kwargs["eps"]) for c in cells] == [
        ("ifgsm", "8/255", 8 / 255), ("ifgsm", "16/255", 16 / 255), ("hsj", "1.5", 1.5)]
    d = cfg.to_dict()
    assert d["attacks"] == [{"name": "ifgsm", "label": "ifgsm", "settings": {}},
                            {"name": "hsj", "label": "hsj", "settings": {}, "eps": ["1.5"]}]
    assert load_config(d) == cfg and load_config(d).digest() == cfg.digest()
    # without an attack's own list nothing new is written, so runs made before keep their digest and resume
    assert "eps" not in load_config(BASE).to_dict()["attacks"][0]


def test_budgets_are_checked_in_the_attacks_own_norm():
    assert load_config({**BASE, "attacks": ["hsj"], "eps": [1.5]}).attacks[0].norm == "l2"  # an ordinary L2 radius
    probs = _problems({**BASE, "attacks": ["ifgsm", {"name": "hsj", "eps": [1.5]}], "eps": [2]})
    assert len(probs) == 1 and probs[0].startswith("eps[0]: eps 2 ") and "allow_large_eps" in probs[0], probs


def test_one_eps_in_settings_is_refused_for_an_own_list():
    probs = _problems({**BASE, "attacks": ["ifgsm", {"name": "mi", "settings": {"eps": 0.05}}]})
    assert probs[0].startswith("attacks[1].settings.eps:") and "{name: mi, eps: [0.05]}" in probs[0], probs
    probs = _problems({**BASE, "attacks": ["ifgsm", {"name": "jsma", "eps": [0.1]}]})
    assert probs == ["attacks[1].eps: 'jsma' does not use eps (it bounds itself); drop it"]


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, fmnist_test):
    """``advkit transfer --no-report`` of I-FGSM (L-inf, the study's list) and HSJ (L2, its own list at the same
    number), then the rerun of the same command."""
    root = tmp_path_factory.mktemp("i23_norms")
    zoo = make_tiny_zoo(root)
    hsj = {"name": "hsj", "eps": ["16/255", 1.0], "settings": {"max_queries": 30, "init_evals": 10, "max_evals": 20}}
    exp = root / "exp.yaml"
    exp.write_text(yaml.safe_dump(tiny_config(zoo, attacks=["ifgsm", "mi", hsj], eps=["8/255", "16/255"], seeds=[0])))
    out = root / "run"
    args = ["transfer", str(exp), "--out", str(out), "--no-report"]
    mp = pytest.MonkeyPatch()
    mp.setattr(sys, "argv", ["advkit", *args])  # the command line the manifest records
    try:
        first = CliRunner().invoke(app, args)
        again = CliRunner().invoke(app, args)
    finally:
        mp.undo()
    assert first.exit_code == 0, first.output + repr(first.exception)
    return out, first.output, again


def test_every_printed_and_written_table_says_the_norm(mixed_run):
    out, printed, _ = mixed_run
    for heading in ("at eps 8/255 (L-inf)", "at eps 16/255 (L-inf)", "at eps 16/255 (L2)", "at eps 1.0 (L2)"):
        assert f"transfer success (%) {heading}, 8 images" in printed, printed
    records = json.loads((out / "results.json").read_text())
    assert budgets(records) == [("8/255", "linf"), ("16/255", "linf"), ("16/255", "l2"), ("1.0", "l2")]
    # the L-inf and the L2 attack at the same number are two tables, never one "eps 16/255" column
    linf, l2 = matrix_table(records, "16/255", norm="linf"), matrix_table(records, "16/255", norm="l2")
    assert [r[0] for r in linf.rows] == ["ifgsm", "mi"] and [r[0] for r in l2.rows] == ["hsj"]
    with pytest.raises(ValueError, match="several norms"):
        text_matrix(records, "16/255")
    # an attack is compared with the baseline only in the baseline's norm
    assert {r["attack"] for r in records["paired"]} == {"mi"}
    assert paired_table(records, "16/255", "l2") is None
    with (out / "results" / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {(r["attack"], r["eps"], r["norm"]) for r in rows} == {
        ("ifgsm", "8/255", "linf"), ("ifgsm", "16/255", "linf"), ("mi", "8/255", "linf"), ("mi", "16/255", "linf"),
        ("hsj", "16/255", "l2"), ("hsj", "1.0", "l2")}
    assert {p["norm"]: p["within_budget"] for p in records["sanity"]["per_eps"]} == {"linf": True, "l2": True}
    assert CliRunner().invoke(app, ["report", str(out)]).exit_code == 0
    md = (out / "report.md").read_text()
    for heading in ("### eps 8/255 (L-inf)", "### eps 16/255 (L-inf)", "### eps 16/255 (L2)", "### eps 1.0 (L2)",
                    "eps: 8/255, 16/255 (L-inf); 16/255, 1.0 (L2)", "largest L2 perturbation at eps 1.0 (L2)",
                    "| tres | hsj | 1.0 (L2) | float |"):
        assert heading in md, heading
    assert "| eps 16/255 |" not in md and "at eps 16/255 on" not in md


def test_records_written_before_norms_were_recorded_still_say_the_norm(mixed_run):
    out, _, _ = mixed_run
    records = json.loads((out / "results.json").read_text())
    for name in ("budgets", "norms"):
        del records["meta"][name]
    for table in ("summary", "paired_summary", "paired_mean"):
        for r in records[table]:
            del r["norm"]
    assert budgets(records) == [("8/255", "linf"), ("16/255", "linf"), ("16/255", "l2"), ("1.0", "l2")]
    assert "at eps 1.0 (L2)" in text_matrix(records, "1.0")
    assert [r[0] for r in matrix_table(records, "16/255", norm="l2").rows] == ["hsj"]


# --- 3. rerunning a --no-report run --------------------------------------------------------------------------------

def test_rerunning_a_no_report_run_says_so_and_how_to_write_it(mixed_run):
    out, _, again = mixed_run
    text = " ".join(again.output.split())
    assert again.exit_code == 2, again.output
    assert f"{out} holds a finished run made with --no-report, so it has no report yet: `advkit report {out}` " \
           f"writes report.md and report.html" in text, text
    assert "stopped while writing" not in text


def test_a_run_stopped_while_writing_its_report_is_still_told_apart(tmp_path):
    from advkit.study.errors import missing_report

    (tmp_path / "manifest.json").write_text(json.dumps({"command": "advkit transfer exp.yaml --out run"}))
    assert "stopped while writing it?" in missing_report(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"command": ""}))
    assert "run from Python" in missing_report(tmp_path)
    assert f"`advkit report {Path(tmp_path)}`" in missing_report(tmp_path)


def test_a_key_given_twice_inside_one_set_value_is_refused():
    # before: --set 'sample={n: 1, n: 2}' kept n = 2 silently (yaml.safe_load keeps the last)
    from advkit.cli.study import parse_overrides
    from advkit.study.errors import ConfigError

    assert parse_overrides(["sample={n: 1, seed: 2}"]) == {"sample": {"n": 1, "seed": 2}}
    with pytest.raises(ConfigError, match=r"--set sample=\{n: 1, n: 2\}\) n: given twice"):
        parse_overrides(["sample={n: 1, n: 2}"])
