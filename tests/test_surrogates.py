"""`advkit analyze surrogates`: grey-box choice of source, attack and gamma knowing only the target's family."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from advkit.analysis.surrogates import Outcomes, choose_surrogates, knowledge_group, load_outcomes
from advkit.cli import app
from advkit.study.runner import run_study


def _outcomes() -> Outcomes:
    """Targets T (residual, the unknown), P (residual, its proxy), N (none). Candidate ``a`` fools the proxy but
    never T; ``b`` fools T but never the proxy; ``c`` fools only N."""
    units = 200
    models = ["T", "P", "N"]
    f = {("a", "ifgsm", None): np.array([[0] * units, [1] * units, [0] * units], bool),
         ("b", "sgm", 0.2): np.array([[1] * units, [0] * units, [0] * units], bool),
         ("c", "mi", None): np.array([[0] * units, [0] * units, [1] * units], bool)}
    return Outcomes("16/255", models, {"T": "residual", "P": "dense", "N": "none"}, sorted(f), f,
                    np.arange(units), ["synthetic"])


def test_the_pick_is_chosen_on_the_family_not_on_the_target():
    (c,) = choose_surrogates(_outcomes(), ["T"], bootstrap=200)
    assert c.proxies == ["P"] and c.n_selection == 100 and c.n_fresh == 100
    assert c.pick["source"] == "a" and c.pick["rate"] == 0.0  # best on the proxy, useless on T
    assert c.oracle["source"] == "b" and c.oracle["gamma"] == 0.2 and c.oracle["rate"] == 1.0
    assert c.blind_pick["source"] in ("a", "c")  # scored on P and N alike: a and c tie, b scores 0
    assert c.hindsight["rate"] == 1.0 and c.average["rate"] == pytest.approx(1 / 3)
    assert c.regret["rate"] == 1.0 and c.regret["ci_low"] == 1.0
    assert c.pick["rank"] > c.oracle["rank"] == 1
    assert c.pick["ci_low"] == 0.0 < c.pick["ci_high"] < 0.05


def test_a_target_without_a_family_member_or_an_unknown_target_is_refused():
    o = _outcomes()
    with pytest.raises(ValueError, match="no candidate can be scored"):
        choose_surrogates(o, ["N"])
    with pytest.raises(ValueError, match="not among the runs' targets"):
        choose_surrogates(o, ["resnet999"])
    with pytest.raises(ValueError, match=r"share in \(0, 1\)"):
        choose_surrogates(o, ["T"], selection=1.0)


ZOO = ["lenet", "mlp", "resnet20", "preact_resnet20", "linear"]


def _config(**over) -> dict:
    cfg = {"title": "surrogates test", "dataset": "fashion-mnist", "sources": ZOO[:4], "targets": ZOO,
           "attacks": ["ifgsm"], "eps": ["16/255"], "steps": 2, "alpha": "8/255", "seeds": [0],
           "sample": {"n": 16, "only_correct": True, "seed": 0}, "batch_size": 16, "save_png": 0}
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fmnist_test):
    root = tmp_path_factory.mktemp("surrogates")
    base = run_study(_config(), root / "base")
    sgm = run_study(_config(sources=["resnet20", "preact_resnet20"], attacks=["sgm"], gamma=[0.5]), root / "sgm")
    return root, base.run_dir, sgm.run_dir


def test_two_runs_over_the_same_images_end_to_end(runs):
    root, base, sgm = runs
    o = load_outcomes([base, sgm])
    assert len(o.candidates) == 4 + 2 and ("resnet20", "sgm", 0.5) in o.candidates
    assert o.family["resnet20"] == "residual" and o.family["lenet"] == "none"
    out = root / "analysis"
    r = CliRunner().invoke(app, ["analyze", "surrogates", str(base), str(sgm), "--out", str(out),
                                 "--bootstrap", "200"])
    assert r.exit_code == 0, r.output
    rows = {t["target"]: t for t in json.loads((out / "results.json").read_text())["targets"]}
    assert set(rows) == set(ZOO)
    # resnet20's only proxy is preact_resnet20, so candidates from preact_resnet20 cannot be scored
    assert rows["resnet20"]["proxies"] == "preact_resnet20"
    assert not rows["resnet20"]["pick"].startswith(("preact_resnet20", "resnet20"))
    for t in rows.values():
        assert not t["pick"].startswith(t["target"] + " ") and t["average_low"] <= t["average_rate"] <= \
            t["average_high"]
        assert t["pick_rate"] <= t["hindsight_rate"] and t["oracle_rate"] <= t["hindsight_rate"]
    for f in ("report.md", "surrogates.csv", "candidates.csv", "surrogates.png"):
        assert (out / f).is_file()
    assert "| target | family | family pick |" in (out / "report.md").read_text()


def test_knowing_the_layers_splits_the_models_without_skips(runs):
    """With --knowledge layers the fully connected targets (mlp, linear) are each other's proxies and the
    convolutional lenet has none here; residual targets keep theirs."""
    _, base, sgm = runs
    o = load_outcomes([base, sgm])
    assert o.arch["lenet"] == "lenet" and knowledge_group("none", "mlp", "layers") == "no skips, fully connected"
    by = {c.target: c for c in choose_surrogates(o, ["mlp", "linear", "resnet20"], bootstrap=200,
                                                 knowledge="layers")}
    assert by["mlp"].proxies == ["linear"] and by["linear"].proxies == ["mlp"]
    assert by["mlp"].group == "no skips, fully connected" and by["resnet20"].proxies == ["preact_resnet20"]
    with pytest.raises(ValueError, match="its group, no skips, convolutional, has no other model"):
        choose_surrogates(o, ["lenet"], knowledge="layers")
    assert choose_surrogates(o, ["lenet"], bootstrap=200)[0].proxies == ["mlp", "linear"]  # skip: all of them
    r = CliRunner().invoke(app, ["analyze", "surrogates", str(base), "--out", str(base / "x"), "--knowledge", "size"])
    assert r.exit_code == 2 and "--knowledge must be one of skip, layers" in r.output


def test_runs_over_other_images_are_refused(runs, tmp_path):
    _, base, _ = runs
    other = run_study(_config(sources=["mlp"], sample={"n": 16, "only_correct": True, "seed": 1}), tmp_path / "o")
    with pytest.raises(ValueError, match="attacked other images"):
        load_outcomes([base, other.run_dir])
    with pytest.raises(ValueError, match="appears in two runs"):
        load_outcomes([base, base])


def test_the_sample_scan_order_follows_the_seed(lenet):
    """`sample.order: random` scans a permutation drawn from `sample.seed` (a regression: for a while the scan
    ignored both and always took the first eligible images of the file)."""
    from advkit.study.config import load_config
    from advkit.study.sample import select_sample

    def index(**sample):
        cfg = load_config({**_config(sources=["lenet"], targets=["lenet"]), "sample": {"n": 20, **sample}})
        return select_sample(cfg, {"lenet": lenet}, "cpu", None)[0]["index"].tolist()

    a, b, first = index(seed=0), index(seed=1), index(order="first", only_correct=False)
    assert a == index(seed=0) and a != b and len(set(a) & set(b)) < 5
    assert first == list(range(20)) and a != sorted(a)


def test_reproduce_sgm_reports_the_robust_targets_next_to_their_plain_twins():
    from advkit.reproduce.sgm import robust_section

    cards = {"lenet": {"arch": "lenet", "name": "lenet"}, "resnet20": {"arch": "resnet20", "name": "resnet20"},
             "lenet_pgd": {"arch": "lenet", "name": "lenet_pgd", "adversarial_training": {"attack": "pgd"}}}
    row = {"eps": "16/255", "images": "float", "over": "all", "source": "resnet20"}
    records = {"meta": {"targets": ["resnet20", "lenet", "lenet_pgd"]},
               "summary": [{**row, "attack": a, "target": t, "mean": m, "pooled_low": m - 0.01,
                            "pooled_high": m + 0.01}
                           for a, t, m in (("ifgsm", "lenet_pgd", 0.02), ("sgm", "lenet_pgd", 0.05),
                                           ("ifgsm", "lenet", 0.30), ("sgm", "lenet", 0.40),
                                           ("ifgsm", "resnet20", 1.0))],
               "paired_summary": [{"eps": "16/255", "baseline": "ifgsm", "source": "resnet20", "attack": "sgm",
                                   "target": "lenet_pgd", "difference_mean": 0.03, "t_low": 0.01, "t_high": 0.05}]}
    heading, _, table = robust_section(records, cards)
    assert heading.text == "Robust targets"
    assert table.rows[1] == ["lenet_pgd (pgd-trained)", "resnet20", "sgm", "5.0 [4.0, 6.0]", "+3.0 [+1.0, +5.0]"]
    assert [r[0] for r in table.rows] == ["lenet_pgd (pgd-trained)"] * 2 + ["lenet (plain twin)"] * 2
    assert robust_section({**records, "meta": {"targets": ["resnet20", "lenet"]}}, cards) == []
