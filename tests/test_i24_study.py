"""Issue 24, studies sweep any setting: a list in an attack's settings is swept into cells labelled by its value,
old experiment files (top-level ``gamma``) keep their cells, labels and digests, a bad setting is a typed error
naming the attack and what is valid, and the experiment is resolved once into frozen, complete cells that the
runner alone reads.

The run tests use the tiny seeded zoo of ``tests/test_transfer.py`` (8 Fashion-MNIST images, a second or two).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import advkit.study.runner as runner
from advkit.attacks import create
from advkit.attacks.core.errors import UnknownPartError, UnknownSettingError
from advkit.report.tables import text_matrix
from advkit.study.config import ConfigError, load_config
from advkit.study.plan import Cell, plan_cells
from advkit.study.runner import run_study
from advkit.study.runstate import RunDir
from tests.test_transfer import make_tiny_zoo, tiny_config

BASE = {"dataset": "fashion-mnist", "sources": ["resnet20"], "targets": ["lenet"], "attacks": ["ifgsm"],
        "eps": ["16/255"], "steps": 5, "seeds": [0, 1]}

# An experiment file written before sweeps existed (the study-wide gamma key, a decay of its own on one attack),
# with the cells and config digest that advkit gave it before (git 38ebfdd): an interrupted run of it resumes.
OLD = {"dataset": "fashion-mnist", "sources": ["resnet20", "densenet_bc40"], "targets": ["lenet"],
       "attacks": ["ifgsm", "sgm", {"name": "sgm+mi", "label": "sgmmi", "settings": {"gamma": 0.7}}],
       "gamma": {"residual": [0.1, 0.5], "dense": "auto"}, "eps": ["16/255"], "steps": 5, "alpha": "eps/4",
       "seeds": [0, 1]}
OLD_DIGEST = "37c3261bd4ab487b1c74f96343d99100e2ff27bf7aa0e2b9ed73fcfa27d03d16"
OLD_CELLS = [
    ("resnet20__ifgsm__eps16-255__s0__c48719", "ifgsm", None, 0),
    ("resnet20__ifgsm__eps16-255__s1__cbe678", "ifgsm", None, 1),
    ("resnet20__sgm__eps16-255__g0.1__s0__357361", "sgm", 0.1, 0),
    ("resnet20__sgm__eps16-255__g0.1__s1__baec03", "sgm", 0.1, 1),
    ("resnet20__sgm__eps16-255__g0.5__s0__4d9a22", "sgm", 0.5, 0),
    ("resnet20__sgm__eps16-255__g0.5__s1__a5d566", "sgm", 0.5, 1),
    ("resnet20__sgmmi__eps16-255__g0.7__s0__a09ec3", "sgmmi", 0.7, 0),
    ("resnet20__sgmmi__eps16-255__g0.7__s1__3cbb96", "sgmmi", 0.7, 1),
    ("densenet_bc40__ifgsm__eps16-255__s0__eb0059", "ifgsm", None, 0),
    ("densenet_bc40__ifgsm__eps16-255__s1__f0d999", "ifgsm", None, 1),
    ("densenet_bc40__sgm__eps16-255__g0.5__s0__8923c4", "sgm", 0.5, 0),
    ("densenet_bc40__sgm__eps16-255__g0.5__s1__8e7e39", "sgm", 0.5, 1),
    ("densenet_bc40__sgmmi__eps16-255__g0.7__s0__8a065e", "sgmmi", 0.7, 0),
    ("densenet_bc40__sgmmi__eps16-255__g0.7__s1__9f66c2", "sgmmi", 0.7, 1),
]
CONNECTIONS = {"resnet20": "residual", "densenet_bc40": "dense"}


def _problems(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config(raw)
    return e.value.problems


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, fmnist_test):
    return make_tiny_zoo(tmp_path_factory.mktemp("i24_zoo"))


# --- 1. any list-valued setting is swept -------------------------------------------------------------------------

def test_a_list_valued_setting_plans_one_attack_per_value():
    cfg = load_config({**BASE, "attacks": ["ifgsm", {"name": "mi+di", "settings": {"decay": [0.5, 1.0],
                                                                                   "di_prob": [0.3, 0.7]}}]})
    cells = plan_cells(cfg, CONNECTIONS)
    assert list(dict.fromkeys(c.label for c in cells)) == [
        "ifgsm", "mi+di decay=0.5 di_prob=0.3", "mi+di decay=0.5 di_prob=0.7", "mi+di decay=1.0 di_prob=0.3",
        "mi+di decay=1.0 di_prob=0.7"]
    swept = [c for c in cells if c.seed == 0 and c.label != "ifgsm"]
    assert [(c.kwargs["decay"], c.kwargs["di_prob"]) for c in swept] == [(0.5, 0.3), (0.5, 0.7), (1.0, 0.3),
                                                                          (1.0, 0.7)]
    assert len({c.id for c in cells}) == len(cells) == 10
    assert swept[0].id.startswith("resnet20__mi+di-decay-0.5-di_prob-0.3__eps16-255__s0__")  # a path-safe name
    # one value (even in a list) is no sweep: the entry keeps its label
    one = plan_cells(load_config({**BASE, "attacks": [{"name": "mi", "settings": {"decay": [0.5]}}]}), CONNECTIONS)
    assert {(c.label, c.kwargs["decay"]) for c in one} == {("mi", 0.5)}


def test_mi_decay_sweeps_into_two_cells_with_distinct_labels_and_results(zoo):
    cfg = tiny_config(zoo, attacks=["ifgsm", {"name": "mi", "settings": {"decay": [0.0, 1.0]}}], seeds=[0])
    res = run_study(cfg, zoo["tres"].rsplit("/", 1)[0] + "/sweep", command="pytest sweep")
    rec = res.records
    assert rec["meta"]["attacks"] == ["ifgsm", "mi decay=0.0", "mi decay=1.0"]
    assert [(c["attack"], c["config"]["decay"]) for c in rec["cells"][1:]] == [("mi decay=0.0", 0.0),
                                                                              ("mi decay=1.0", 1.0)]
    run = RunDir(res.run_dir)
    x0, x1 = (run.read_shard(c["id"], 0)[0]["x_adv"] for c in rec["cells"][1:])
    assert not torch.equal(x0, x1)  # two attacks, not one run twice
    assert {p["attack"] for p in rec["paired"]} == {"mi decay=0.0", "mi decay=1.0"}  # each against the baseline
    table = text_matrix(rec, "16/255", "linf")
    assert "mi decay=0.0" in table and "mi decay=1.0" in table


def test_gamma_is_an_ordinary_sgm_setting():
    """``settings: {gamma: [...]}`` sweeps SGM's decay like the study-wide key did: same cells, same ids, the decay
    in the records' gamma column (``sgm (γ=0.1)``), not in the label."""
    old = plan_cells(load_config({**BASE, "attacks": ["ifgsm", "sgm"], "gamma": [0.1, 0.5]}), CONNECTIONS)
    new = plan_cells(load_config({**BASE, "attacks": ["ifgsm", {"name": "sgm", "settings": {"gamma": [0.1, 0.5]}}]}),
                     CONNECTIONS)
    assert [(c.id, c.label, c.gamma, c.kwargs) for c in new] == [(c.id, c.label, c.gamma, c.kwargs) for c in old]
    auto = plan_cells(load_config({**BASE, "attacks": [{"name": "sgm", "settings": {"gamma": ["auto", 0.5]}}]}),
                      CONNECTIONS, auto=lambda src: 0.3)
    assert [(c.label, c.gamma) for c in auto if c.seed == 0] == [("sgm", 0.3), ("sgm", 0.5)]
    probs = _problems({**BASE, "attacks": [{"name": "sgm", "settings": {"gamma": [0.2, 1.5]}}]})
    assert len(probs) == 1 and probs[0].startswith("attacks[0].settings") and "1.5" in probs[0], probs


def test_a_gamma_setting_of_an_attack_without_sgm_is_its_own():
    """HSJ has a ``gamma`` of its own (its binary-search threshold): it was checked, then silently dropped from the
    cells (every ``gamma`` setting was taken for SGM's); it is now an ordinary setting, passed on."""
    cfg = load_config({**BASE, "attacks": ["ifgsm", {"name": "hsj", "eps": [1.5], "settings": {"gamma": 2.0}}]})
    hsj = [c for c in plan_cells(cfg, CONNECTIONS) if c.label == "hsj"]
    assert [(c.gamma, c.kwargs) for c in hsj] == [(None, {"eps": 1.5, "gamma": 2.0})] * 2
    assert create("hsj", **hsj[0].kwargs).gamma == 2.0


def test_old_experiment_files_keep_their_cells_labels_and_digest():
    cfg = load_config(OLD)
    assert cfg.digest() == OLD_DIGEST  # an interrupted run of it resumes (RunDir checks the digest)
    cells = plan_cells(cfg, CONNECTIONS)
    assert [(c.id, c.label, c.gamma, c.seed) for c in cells] == OLD_CELLS
    assert cells[3].kwargs == {"eps": 16 / 255, "steps": 5, "alpha": 4 / 255, "gamma": 0.1}
    assert load_config(cfg.to_dict()) == cfg and cfg.to_dict()["gamma"] == OLD["gamma"]


def test_sweeps_that_cannot_run_are_refused_with_the_fix():
    probs = _problems({**BASE, "attacks": ["ifgsm", {"name": "mi", "settings": {"decay": []}}]})
    assert probs == ["attacks[1].settings.decay: an empty list sweeps nothing; give one value or several"]
    probs = _problems({**BASE, "attacks": ["ifgsm", {"name": "mi", "settings": {"decay": [0.5, 0.5]}}]})
    assert probs == ["attacks[1].settings.decay: 0.5 is listed twice"]
    probs = _problems({**BASE, "attacks": [{"name": "mi", "settings": {"decay": [0.5, -1.0]}}, "ifgsm"]})
    assert len(probs) == 1 and probs[0].startswith("attacks[0].settings (decay=-1.0): ") and "decay" in probs[0]
    assert load_config({**BASE, "attacks": [{"name": "mi", "settings": {"decay": [0.5, 1.0]}}, "di"]}).baseline \
        == "di"  # by default, the first attack that sweeps nothing
    probs = _problems({**BASE, "attacks": [{"name": "mi", "settings": {"decay": [0.5, 1.0]}}], "baseline": "mi"})
    assert len(probs) == 1 and probs[0].startswith("baseline: 'mi' sweeps decay (2 attacks: mi decay=0.5, "
                                                   "mi decay=1.0)") and "label: mi-base" in probs[0], probs
    probs = _problems({**BASE, "attacks": [{"name": "pgd", "settings": {"norm": ["linf", "l2"]}}]})
    assert any(p.startswith("attacks[0].settings.norm: one norm per entry") for p in probs), probs


# --- 2. typed errors, not parsed ----------------------------------------------------------------------------------

def test_a_bad_setting_is_a_typed_error_naming_the_attack_setting_and_valid_names(tmp_path):
    with pytest.raises(UnknownSettingError) as e:
        create("mi", decya=0.5)
    assert (e.value.attack, e.value.setting) == ("mi", "decya") and "decay" in e.value.valid
    assert isinstance(e.value, ValueError)
    with pytest.raises(UnknownPartError) as p:
        create("sgm+foo+bar")
    assert p.value.unknown == ("foo", "bar") and "mi" in p.value.known
    exp = tmp_path / "exp.yaml"
    exp.write_text("sources: [resnet20]\ntargets: [lenet]\neps: [16/255]\n"
                   "attacks: [ifgsm, {name: mi, settings: {decya: [0.5, 1.0]}}]\n")
    with pytest.raises(ConfigError) as c:
        load_config(exp)
    assert c.value.problems == ["attacks[1].settings.decya: 'decya' does not apply to 'mi' (its settings: alpha, "
                                "decay, eps, loss, norm, steps); did you mean 'decay'?"]
    probs = _problems({**BASE, "attacks": ["ifgsm", "sgm+foo+bar"]})
    assert probs[0].startswith("attacks[1].name: unknown attack part 'foo', 'bar' in 'sgm+foo+bar'; known: ")


def test_validate_is_small_checks():
    """``validate()`` had cyclomatic complexity 42 (34 by ruff's mccabe); each field now has its own check."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("ruff")
    study = Path(__file__).resolve().parents[1] / "src" / "advkit" / "study"
    files = [str(study / f) for f in ("validate.py", "attack_checks.py", "sweep.py", "plan.py")]
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "C901", "--config",
                          "lint.mccabe.max-complexity=10", *files], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


# --- 3. resolved once, into frozen and complete cells -----------------------------------------------------------

def test_cells_are_frozen_and_complete():
    cfg = load_config({**OLD, "attacks": [*OLD["attacks"], {"name": "hsj", "eps": [1.5]}]})
    cells = plan_cells(cfg, CONNECTIONS)
    c = cells[3]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.eps = "8/255"  # type: ignore[misc]
    c.kwargs["gamma"] = 0.9  # a fresh dict: the cell is unchanged
    assert c.kwargs["gamma"] == 0.1 and hash(c.arguments)
    assert (c.source, c.label, c.eps, c.eps_value, c.norm, c.seed, c.pick, c.models) == (
        "resnet20", "sgm", "16/255", 16 / 255, "linf", 1, 1, ("resnet20", "lenet"))
    hsj = [x for x in cells if x.label == "hsj"]
    assert {(x.eps, x.eps_value, x.norm, x.gamma) for x in hsj} == {("1.5", 1.5, "l2", None)}
    for cell in cells:  # every argument the attack takes is written out: building it needs nothing else
        atk = create(cell.attack.name, **cell.kwargs)
        assert float(atk.eps) == cell.eps_value and atk.norm == cell.norm
    assert not any(hasattr(cfg, q) for q in ("gammas_for", "eps_value", "alpha_value", "eps_for"))


def test_the_runner_reads_the_cells_alone(zoo, monkeypatch):
    """What runs is what the cells say: cells changed after planning (one step, the source alone evaluated) are
    what the shards compute and the records show, whatever the config says."""
    planned: list[list[Cell]] = []

    def plan(cfg, connections, auto=None):
        cells = [dataclasses.replace(c, models=(c.source,), arguments=tuple({**c.kwargs, "steps": 1}.items()))
                 for c in plan_cells(cfg, connections, auto)]
        planned.append(cells)
        return cells

    monkeypatch.setattr(runner, "plan_cells", plan)
    res = run_study(tiny_config(zoo, seeds=[0]), zoo["tres"].rsplit("/", 1)[0] + "/cells-only", command="pytest")
    assert len(planned) == 1 and [c["id"] for c in res.records["cells"]] == [c.id for c in planned[0]]
    assert {c["config"]["steps"] for c in res.records["cells"]} == {1}  # the config says 3
    assert {r["target"] for r in res.records["success"]} == {"tres"}  # the config also lists tlin


def test_the_report_names_the_decays_an_sgm_attack_sweeps_in_its_settings(zoo):
    """The report's first paragraph gives the decays used, not the study-wide default, when the SGM attack sweeps
    its own ``gamma`` (``"auto"`` would be false: no cell used it)."""
    from advkit.report.run_report import build_report

    cfg = tiny_config(zoo, attacks=["ifgsm", {"name": "sgm", "settings": {"gamma": [0.2, 0.5]}}], seeds=[0])
    res = run_study(cfg, zoo["tres"].rsplit("/", 1)[0] + "/sgm-sweep", command="pytest sgm sweep")
    assert sorted({c["gamma"] for c in res.records["cells"] if c["gamma"] is not None}) == [0.2, 0.5]
    text = build_report(res.run_dir).markdown()
    assert "SGM gamma: 0.2, 0.5." in text and '"auto"' not in text


def test_every_example_file_is_valid_and_the_sweep_example_plans_a_row_per_value():
    import yaml

    examples = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))
    assert len(examples) >= 8
    for path in examples:
        load_config(yaml.safe_load(path.read_text()))  # raises ConfigError naming the key
    cfg = load_config(yaml.safe_load((examples[0].parent / "sweep_settings.yaml").read_text()))
    rows = list(dict.fromkeys((c.label, c.gamma) for c in plan_cells(cfg, {"resnet20": "residual"})))
    assert rows == [("ifgsm", None), ("mi decay=0.0", None), ("mi decay=0.5", None), ("mi decay=1.0", None),
                    ("sgm", 0.2), ("sgm", 0.5), ("sgm", 0.8), ("di di_prob=0.3", None), ("di di_prob=0.7", None)]
