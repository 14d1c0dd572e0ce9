"""The web study under load (issue 28): 50 simulated participants answer at once through a real uvicorn server;
every answer the server acknowledged is in SQLite exactly once, nothing fails, and the latency is printed.

The study asks Papernot et al.'s questions ("The Limitations of Deep Learning in Adversarial Settings", EuroS&P
2016): is this a digit, which digit.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

from tests.humans_server import ATTENTION, ITEMS, answer_rows, copy_run, i28_run_fixture, run_load, serve  # noqa: F401  (i28_run_fixture: the session's JSMA run)

pytest.importorskip("starlette", reason="the web study needs pip install 'advkit[humans]'")
pytest.importorskip("uvicorn", reason="the web study needs pip install 'advkit[humans]'")
pytest.importorskip("httpx", reason="the load test needs httpx (a dev dependency)")

PARTICIPANTS, ANSWERS = 50, 10


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, i28_jsma_run):
    from advkit.humans.app import create_app

    run = copy_run(i28_jsma_run, tmp_path_factory.mktemp("i28load"))
    app = create_app(run, items_per_participant=ITEMS, attention_checks=ATTENTION, seed=0)
    with serve(app) as base:
        result = run_load(base, PARTICIPANTS, ANSWERS, repeat_every=5)
    return run, result


def test_fifty_participants_at_once_lose_no_answer(loaded):
    run, result = loaded
    assert result.bad_status == []  # no 5xx, no 4xx, every redirect where the contract puts it
    assert len(result.participants) == len(set(result.participants)) == PARTICIPANTS
    assert len(result.acknowledged) == PARTICIPANTS * ANSWERS and result.repeats == PARTICIPANTS // 5
    rows = answer_rows(run / "humans.sqlite")
    keys = [(p, i) for p, i, *_ in rows]
    assert len(keys) == len(set(keys))  # the repeated submits made no second row
    assert set(keys) == result.acknowledged  # 0 lost, nothing unacknowledged written
    assert all(s >= 0 for *_, s in rows)
    p = result.percentiles()
    print(f"\nPOST /answer latency, {PARTICIPANTS} participants x {ANSWERS} answers at once: "
          f"p50 {p['p50']:.1f} ms, p95 {p['p95']:.1f} ms, p99 {p['p99']:.1f} ms, max {p['max']:.1f} ms; "
          f"{len(result.latencies) / result.wall:.0f} answers/s over {result.wall:.1f} s")


def test_each_answer_is_for_an_item_assigned_to_that_participant(loaded):
    run, result = loaded
    with closing(sqlite3.connect(run / "humans.sqlite")) as con:
        orphans = con.execute("SELECT COUNT(*) FROM answers a LEFT JOIN assignments s ON s.participant = "
                              "a.participant AND s.item = a.item WHERE s.item IS NULL").fetchone()[0]
        consented = con.execute("SELECT COUNT(*) FROM participants WHERE consented IS NOT NULL").fetchone()[0]
        journal = con.execute("PRAGMA journal_mode").fetchone()[0]
    assert orphans == 0 and consented == PARTICIPANTS
    assert journal.lower() == "wal"
