"""``advkit analyze humans``: the analysis of a human perception study's answers, on a real (tiny) JSMA run with a
``humans.sqlite`` written by hand in the shared contract's schema."""

from __future__ import annotations

import csv
import shutil
import sqlite3

import numpy as np
import pytest
from typer.testing import CliRunner

from advkit.analysis.perception import jsma_examples, perception_study
from advkit.cli import app
from advkit.humans.analysis import EXPORT_COLUMNS, cluster_share, export_csv, humans_study

SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE items(id INTEGER PRIMARY KEY, kind TEXT NOT NULL CHECK(kind IN ('adversarial','control','attention')),
  source INTEGER NOT NULL, target INTEGER, example INTEGER, clean_index INTEGER, model_pred INTEGER NOT NULL,
  png BLOB NOT NULL);
CREATE TABLE participants(id TEXT PRIMARY KEY, created REAL NOT NULL, consented REAL, finished REAL);
CREATE TABLE assignments(participant TEXT NOT NULL, position INTEGER NOT NULL, item INTEGER NOT NULL, shown REAL,
  PRIMARY KEY(participant, position), UNIQUE(participant, item));
CREATE TABLE answers(participant TEXT NOT NULL, item INTEGER NOT NULL, is_digit INTEGER NOT NULL
  CHECK(is_digit IN (0,1)), label INTEGER NOT NULL, seconds REAL NOT NULL, answered_at REAL NOT NULL,
  PRIMARY KEY(participant, item));
"""

ATT = {6: 1, 7: 2, 8: 5}  # attention item -> its true class
RIGHT = [(6, 1, 1), (7, 1, 2), (8, 1, 5)]  # (item, is_digit, label): all three attention checks right
# participant -> (finished, [(item, is_digit, label)]); items 1-3 adversarial, 4-5 controls, 6-8 attention
PEOPLE = {
    "A": (True, RIGHT + [(1, 1, 9), (2, 1, 9), (3, 1, 0), (4, 1, 9), (5, 0, 3)]),
    "B": (True, [(6, 1, 1), (7, 1, 2), (8, 1, 7)] + [(1, 1, 0), (2, 0, 9), (3, 1, 3), (4, 1, 9), (5, 1, 3)]),
    "C": (False, [(6, 1, 1), (1, 1, 9)]),  # unfinished, 1 of 1 check right: kept
    "D": (True, [(6, 0, 1), (7, 1, 0), (8, 1, 5)] + [(1, 0, 0), (2, 0, 1), (3, 0, 0), (4, 0, 0), (5, 0, 0)]),
    "E": (False, [(1, 1, 0)]),  # no attention answer yet: dropped
    "F": (False, []),  # consented, answered nothing
}


@pytest.fixture(scope="module")
def jsma_run(tmp_path_factory, fmnist_test):
    from advkit.reproduce.jsma import run_jsma

    out = tmp_path_factory.mktemp("jsma") / "run"
    run_jsma(out, "fashion-mnist", "lenet", 4, split="test[:40]")
    return out


def write_study(run_dir, people=PEOPLE):
    """The contract's ``humans.sqlite``: adversarial items on examples 0, 1 (9 -> 0, 9 -> 1) and 9 (3 -> 0)."""
    ex = jsma_examples(run_dir)
    adv = [(1, 0), (2, 1), (3, 9)]
    assert [(int(ex["source"][e]), int(ex["target"][e])) for _, e in adv] == [(9, 0), (9, 1), (3, 0)]
    con = sqlite3.connect(run_dir / "humans.sqlite")
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(SCHEMA)
    con.executemany("INSERT INTO meta VALUES (?, ?)", [("dataset", "fashion-mnist"), ("run_dir", str(run_dir))])
    preds = {1: 0, 2: 9, 3: 0}  # the model reads item 2 as its source class
    con.executemany("INSERT INTO items VALUES (?, 'adversarial', ?, ?, ?, NULL, ?, x'00')",
                    [(i, int(ex["source"][e]), int(ex["target"][e]), e, preds[i]) for i, e in adv])
    con.executemany("INSERT INTO items VALUES (?, 'control', ?, NULL, NULL, ?, ?, x'00')",
                    [(4, 9, 0, 9), (5, 3, 13, 3)])
    con.executemany("INSERT INTO items VALUES (?, 'attention', ?, NULL, NULL, ?, ?, x'00')",
                    [(i, c, 100 + i, c) for i, c in ATT.items()])
    t = 1000.0
    for p, (finished, answers) in people.items():
        con.execute("INSERT INTO participants VALUES (?, ?, ?, ?)", (p, t, t, t + 99 if finished else None))
        for k, (item, is_digit, label) in enumerate(answers):
            t += 1
            con.execute("INSERT INTO assignments VALUES (?, ?, ?, ?)", (p, k, item, t))
            con.execute("INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?)", (p, item, is_digit, label, 1.5, t))
    con.commit()
    con.close()
    return run_dir


@pytest.fixture
def study_dir(jsma_run, tmp_path):
    return write_study(shutil.copytree(jsma_run, tmp_path / "run"))


def test_shares_and_counts_are_the_hand_computed_ones(study_dir):
    h = humans_study(study_dir, n_boot=200)
    adv, ctl = h.overall["adversarial"], h.overall["control"]
    # kept: A (3 of 3 checks), B (2 of 3), C (1 of 1, unfinished); adversarial answers: A 3, B 3, C 1
    assert (adv["is_digit"].value, adv["source"].value, adv["target"].value) == pytest.approx((6 / 7, 5 / 7, 2 / 7))
    assert (adv["source"].answers, adv["source"].participants) == (7, 3)
    assert (ctl["is_digit"].value, ctl["source"].value, ctl["source"].answers) == pytest.approx((3 / 4, 1.0, 4))
    assert "target" not in ctl
    pairs = {(p["source"], p["target"]): p for p in h.pairs}
    assert set(pairs) == {(9, 0), (9, 1), (3, 0)}
    assert pairs[9, 0]["people"]["source"].value == pytest.approx(2 / 3)
    assert pairs[9, 0]["people"]["target"].value == pytest.approx(1 / 3)
    assert pairs[3, 0]["people"]["target"].answers == 2 and pairs[9, 1]["people"]["source"].value == 1.0
    assert [(r["source"], r["people"]["source"].answers) for r in h.per_class] == [(3, 2), (9, 2)]
    # the model on the same 3 adversarial items: target on items 1 and 3, source on item 2; controls right
    m = h.model
    assert (m["adversarial_target"].value, m["adversarial_source"].value) == pytest.approx((2 / 3, 1 / 3))
    assert m["control_source"].value == 1.0 and m["adversarial_target"].answers == 3
    assert h.counts == {"total": 6, "kept": 3, "dropped_attention": 1, "dropped_no_attention": 2,
                        "unfinished_kept": 1, "unfinished_answers": 1, "answers": 27, "kept_answers": 11}
    # the proxy on the same examples: finite distances, one ratio per pair
    assert h.proxy["examples"] == 3 and np.isfinite(h.proxy["mean_ratio"])
    proxy = perception_study(study_dir)  # the same distances as `advkit analyze perception`, examples 0, 1, 9
    ratio = proxy.d_source / proxy.d_target
    assert [pairs[st]["proxy_ratio"] for st in ((9, 0), (9, 1), (3, 0))] == pytest.approx(ratio[[0, 1, 9]])
    assert h.proxy["share_nearer_target"] == pytest.approx(np.mean(ratio[[0, 1, 9]] > 1))


def test_a_participant_failing_attention_changes_nothing(jsma_run, tmp_path):
    without = {p: v for p, v in PEOPLE.items() if p != "D"}
    a = humans_study(write_study(shutil.copytree(jsma_run, tmp_path / "a"), without), n_boot=200)
    b = humans_study(write_study(shutil.copytree(jsma_run, tmp_path / "b")), n_boot=200)
    assert a.overall == b.overall and a.pairs == b.pairs and a.model == b.model
    assert (a.counts["dropped_attention"], b.counts["dropped_attention"]) == (0, 1)
    # a stricter rule (3 of 3) drops B as well
    strict = humans_study(tmp_path / "b", min_attention=1, n_boot=200)
    assert strict.counts["kept"] == 2 and strict.overall["adversarial"]["source"].answers == 4


def test_bootstrap_interval_contains_the_estimate_and_shrinks_with_participants():
    pattern = [True, False, True, True]  # odd participants: a rotation of this; even ones: 1 hit of 4
    few_who, few_hit, many_who, many_hit = [], [], [], []
    for p in range(40):
        hits = np.roll(pattern, p) if p % 2 else [False, False, True, False]
        for h in hits:
            (many_who.append(p), many_hit.append(h))
            if p < 6:
                (few_who.append(p), few_hit.append(h))
    few = cluster_share(np.array(few_who), np.array(few_hit), 2000, 0)
    many = cluster_share(np.array(many_who), np.array(many_hit), 2000, 0)
    for s in (few, many):
        assert s.low <= s.value <= s.high and s.low < s.high
    assert (few.participants, many.participants) == (6, 40)
    assert many.high - many.low < 0.6 * (few.high - few.low)
    assert cluster_share(np.array(few_who), np.array(few_hit), 2000, 0) == few  # seeded
    # the interval accounts for participants: 10 people each answering 10 times alike are 10 observations, not 100
    hits = np.repeat([True, False] * 5, 10)
    clustered = cluster_share(np.repeat(np.arange(10), 10), hits, 2000, 0)
    spread = cluster_share(np.arange(100), hits, 2000, 0)
    assert clustered.value == spread.value == 0.5
    assert clustered.high - clustered.low > 2.5 * (spread.high - spread.low)


def test_identical_participants_give_a_zero_width_interval(jsma_run, tmp_path):
    same = [(1, 1, 9), (2, 1, 1), (3, 0, 3), (4, 1, 9), (5, 1, 3)]
    people = {f"P{i}": (True, RIGHT + same) for i in range(5)}
    h = humans_study(write_study(shutil.copytree(jsma_run, tmp_path / "run"), people), n_boot=300)
    for kind in h.overall.values():
        for s in kind.values():
            assert s.low == s.value == s.high and s.participants == 5
    assert h.overall["adversarial"]["source"].value == pytest.approx(2 / 3)


def test_csv_has_one_row_per_answer_with_its_item_and_status(study_dir, tmp_path):
    path = export_csv(study_dir, tmp_path / "out" / "answers.csv")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(len(a) for _, a in PEOPLE.values()) == 27
    assert tuple(rows[0]) == EXPORT_COLUMNS
    status = {r["participant"]: r["status"] for r in rows}
    assert status == {"A": "kept", "B": "kept", "C": "kept", "D": "dropped: attention",
                      "E": "dropped: no attention answer"}
    b1 = next(r for r in rows if (r["participant"], r["item"]) == ("B", "1"))
    assert (b1["kind"], b1["source"], b1["target"], b1["example"], b1["label"]) == ("adversarial", "9", "0", "0", "0")
    assert (b1["label_is_source"], b1["label_is_target"], b1["model_pred"]) == ("0", "1", "0")


def test_cli_writes_the_report_and_prints_the_verdict(study_dir, tmp_path):
    out, answers = tmp_path / "report", tmp_path / "answers.csv"
    r = CliRunner().invoke(app, ["analyze", "humans", str(study_dir), "--out", str(out), "--csv", str(answers),
                                 "--boot", "200"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    said = " ".join(r.output.split())
    assert "People still read 71% [" in said and "of adversarial samples as their source class" in said
    assert "the model reads 33% of the same samples as their source class and 67% as the target" in said
    for name in ("report.html", "report.md", "source_heatmap.png", "target_heatmap.png", "pairs.csv"):
        assert (out / name).is_file(), name
    md = (out / "report.md").read_text()
    assert "at least 2/3 of the attention checks" in md and "1 dropped for failing the attention checks" in md
    assert "| people, adversarial samples | 86% [" in md
    assert len(answers.read_text().splitlines()) == 28
    # 0.67 is stricter than 2/3: B (2 of 3) is dropped
    r = CliRunner().invoke(app, ["analyze", "humans", str(study_dir), "--out", str(out), "--min-attention", "0.67",
                                 "--boot", "50"])
    assert r.exit_code == 0 and "2 participants" in " ".join(r.output.split())


def _error(args):
    r = CliRunner().invoke(app, ["analyze", "humans", *args])
    assert r.exit_code == 2, r.output + repr(r.exception)
    return " ".join(r.output.split())


def test_bad_inputs_give_clear_errors(jsma_run, tmp_path):
    assert "start one with `advkit humans serve" in _error([str(jsma_run)])
    empty = write_study(shutil.copytree(jsma_run, tmp_path / "empty"), {"A": (False, [])})
    assert "holds no answers yet" in _error([str(empty)])
    failing = {"D": PEOPLE["D"], "E": PEOPLE["E"]}
    bad = write_study(shutil.copytree(jsma_run, tmp_path / "bad"), failing)
    assert "no participant passes the attention rule" in _error([str(bad)])
    assert "--min-attention" in _error([str(bad)])
