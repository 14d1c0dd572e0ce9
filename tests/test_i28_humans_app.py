"""The local web study (issue 28): `advkit humans serve` over a small finished JSMA run, through Starlette's client."""

from __future__ import annotations

import gc
import io
import re
import shutil
import sqlite3
import warnings
from collections import Counter

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's testclient warns that it prefers httpx2
    from starlette.testclient import TestClient

from advkit.humans import store
from advkit.humans.app import create_app, serve
from advkit.humans.items import open_study
from advkit.reproduce.jsma import run_jsma

N = 40  # items per participant (the default): 3 attention, 8 controls, 29 adversarial


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, fmnist_test):
    """A finished 4-sample JSMA run (36 adversarial examples, one per class pair) with its study built, no one in it."""
    out = tmp_path_factory.mktemp("humans") / "run"
    run_jsma(out, "fashion-mnist", "lenet", 4, split="test")
    open_study(out)
    return out


@pytest.fixture
def run(pristine, tmp_path):
    """A fresh copy of the study (no participants yet)."""
    return shutil.copytree(pristine, tmp_path / "run")


def db_rows(run, sql, *args):
    conn = sqlite3.connect(run / "humans.sqlite")
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def join(client):
    """Consent as a new participant; returns the csrf token."""
    client.get("/")
    csrf = client.cookies.get("advkit_csrf")
    r = client.post("/consent", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/instructions"
    return csrf


def current(client):
    """(item id, csrf from the form, progress text) of the /item page."""
    r = client.get("/item", follow_redirects=False)
    assert r.status_code == 200, r.status_code
    item = int(re.search(r'name="item" value="(\d+)"', r.text).group(1))
    csrf = re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)
    return item, csrf, re.search(r'<div id="progress">(.*?)</div>', r.text).group(1)


def answer(client, item, csrf, is_digit="1", label="3"):
    return client.post("/answer", data={"csrf": csrf, "item": str(item), "is_digit": is_digit, "label": label},
                       follow_redirects=False)


def test_consent_needs_the_csrf_token(run):
    client = TestClient(create_app(run))
    client.get("/")
    assert client.post("/consent", data={}, follow_redirects=False).status_code == 403
    assert client.post("/consent", data={"csrf": "forged"}, follow_redirects=False).status_code == 403
    assert "advkit_participant" not in client.cookies
    assert db_rows(run, "SELECT COUNT(*) FROM participants") == [(0,)]


def test_a_full_walk_writes_one_row_per_item(run):
    client = TestClient(create_app(run))
    page = client.get("/").text
    assert 'id="consent-form"' in page and 'id="consent"' in page and "anonymous" in page
    join(client)
    instructions = client.get("/instructions").text
    assert "Is this a piece of clothing?" in instructions and "Ankle boot" in instructions
    assert 'id="start"' in instructions
    sent = {}
    for k in range(N):
        item, csrf, shown = current(client)
        assert shown == f"{k} / {N}" and item not in sent
        assert client.get(f"/image/{item}").headers["content-type"] == "image/png"
        sent[item] = (k % 2, k % 10)
        assert answer(client, item, csrf, str(k % 2), str(k % 10)).headers["location"] == "/item"
    r = client.get("/item", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/done"
    assert 'id="done"' in client.get("/done").text
    rows = db_rows(run, "SELECT item, is_digit, label, seconds, answered_at FROM answers")
    assert {r[0]: (r[1], r[2]) for r in rows} == sent and len(rows) == N
    assert all(r[3] >= 0 and r[4] > 1.7e9 for r in rows)
    kinds = Counter(k for (k,) in db_rows(run, "SELECT i.kind FROM answers a JOIN items i ON i.id = a.item"))
    assert kinds == {"attention": 3, "control": 8, "adversarial": 29}
    assert db_rows(run, "SELECT finished IS NOT NULL FROM participants") == [(1,)]


def test_a_repeated_answer_keeps_one_row(run):
    client = TestClient(create_app(run))
    join(client)
    item, csrf, _ = current(client)
    assert answer(client, item, csrf, "1", "4").status_code == 303
    again = answer(client, item, csrf, "0", "7")
    assert again.status_code == 303 and again.headers["location"] == "/item"
    assert db_rows(run, "SELECT is_digit, label FROM answers") == [(1, 4)]


def test_invalid_answers_are_refused_and_write_nothing(run):
    client = TestClient(create_app(run))
    join(client)
    item, csrf, _ = current(client)
    pid = client.cookies.get("advkit_participant")
    mine = {i for (i,) in db_rows(run, "SELECT item FROM assignments WHERE participant = ?", pid)}
    other = next(i for (i,) in db_rows(run, "SELECT id FROM items") if i not in mine)
    assert answer(client, other, csrf).status_code == 400
    assert answer(client, 10**6, csrf).status_code == 400
    assert answer(client, item, csrf, is_digit="2").status_code == 400
    assert answer(client, item, csrf, label="10").status_code == 400
    assert answer(client, "1; DROP TABLE answers", csrf).status_code == 400
    assert answer(client, item, "forged").status_code == 403
    assert db_rows(run, "SELECT COUNT(*) FROM answers") == [(0,)]


def test_images_only_of_ones_own_items(run):
    app = create_app(run)
    client = TestClient(app)
    assert client.get("/image/1").status_code == 404  # no participant
    join(client)
    join(TestClient(app))  # someone else, whose items are not all ours
    item, _, _ = current(client)
    pid = client.cookies.get("advkit_participant")
    mine = {i for (i,) in db_rows(run, "SELECT item FROM assignments WHERE participant = ?", pid)}
    other = next(i for (i,) in db_rows(run, "SELECT item FROM assignments WHERE participant != ?", pid)
                 if i not in mine)
    assert client.get(f"/image/{other}").status_code == 404
    assert client.get("/image/999999").status_code == 404
    from PIL import Image

    assert Image.open(io.BytesIO(client.get(f"/image/{item}").content)).size == (28, 28)


def test_a_participant_resumes_with_the_cookie(run):
    app = create_app(run)
    first = TestClient(app)
    join(first)
    for _ in range(3):
        item, csrf, _ = current(first)
        answer(first, item, csrf)
    expected, _, _ = current(first)
    second = TestClient(app)  # the tab closed: a new client with the same cookies
    for key in ("advkit_participant", "advkit_csrf"):
        second.cookies.set(key, first.cookies.get(key))
    r = second.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/item"
    item, csrf, shown = current(second)
    assert item == expected and shown == f"3 / {N}"
    assert answer(second, item, csrf).status_code == 303
    assert db_rows(run, "SELECT COUNT(*), COUNT(DISTINCT participant) FROM answers") == [(4, 1)]


def test_assignment_balances_the_class_pairs(run):
    app = create_app(run)
    for _ in range(2):
        join(TestClient(app))
    pairs = db_rows(run, "SELECT DISTINCT source, target FROM items WHERE kind = 'adversarial'")
    got = Counter(db_rows(run, "SELECT i.source, i.target FROM assignments a JOIN items i ON i.id = a.item "
                               "WHERE i.kind = 'adversarial'"))
    counts = [got[p] for p in pairs]
    assert sum(counts) == 2 * 29 and max(counts) - min(counts) <= 1
    per = db_rows(run, "SELECT participant, COUNT(*), COUNT(DISTINCT item) FROM assignments GROUP BY participant")
    assert [(n, d) for _, n, d in per] == [(N, N), (N, N)]
    controls = Counter(s for (s,) in db_rows(run, "SELECT i.source FROM assignments a JOIN items i ON i.id = a.item "
                                                  "WHERE i.kind = 'control'"))
    assert len(controls) == 10 and max(controls.values()) - min(controls.values()) <= 1  # 16 over 10 classes


def test_items_say_what_the_model_sees(run):
    rows = db_rows(run, "SELECT kind, source, target, model_pred FROM items")
    adv = [r for r in rows if r[0] == "adversarial"]
    assert len(adv) == 36 and sum(r[2] == r[3] for r in adv) >= 0.9 * len(adv)  # JSMA reached the target
    assert all(r[1] == r[3] and r[2] is None for r in rows if r[0] == "attention")


def test_export_sits_behind_the_token(run):
    client = TestClient(create_app(run, token="s3cret"))
    join(client)
    item, csrf, _ = current(client)
    answer(client, item, csrf, "0", "5")
    assert client.get("/export").status_code == 403
    assert client.get("/export?token=wrong").status_code == 403
    r = client.get("/export", headers={"Authorization": "Bearer s3cret"})
    lines = r.text.splitlines()
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert lines[0].startswith("participant,item,kind,source,target") and len(lines) == 2
    assert f",{item}," in lines[1] and client.get("/export?token=s3cret").text == r.text
    assert TestClient(create_app(run)).get("/export?token=").status_code == 403  # no token: never


def test_pages_carry_the_security_headers(run):
    client = TestClient(create_app(run))
    join(client)
    r = client.get("/item")
    assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'sha256-" in csp and "unsafe-inline" not in csp
    for needed in ('id="is-digit-yes"', 'id="is-digit-no"', 'id="label-0"', 'id="label-9"', 'id="submit"',
                   'id="item-image"', "image-rendering: pixelated"):
        assert needed in r.text
    again = client.post("/consent", data={"csrf": client.cookies.get("advkit_csrf")}, follow_redirects=False)
    assert again.headers["location"] == "/item"  # an already consented participant gets no second id
    assert db_rows(run, "SELECT COUNT(*) FROM participants") == [(1,)]


def test_serve_refuses_a_public_host_without_a_token(run, monkeypatch):
    import uvicorn

    calls, lines = [], []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    with pytest.raises(ValueError, match="--token"):
        serve(run, host="0.0.0.0", announce=lines.append)
    assert calls == []
    serve(run, host="0.0.0.0", port=8123, token="t", announce=lines.append)
    assert calls[0]["host"] == "0.0.0.0" and calls[0]["port"] == 8123 and "http://0.0.0.0:8123/" in lines[0]
    serve(run, announce=lines.append)
    assert calls[1]["host"] == "127.0.0.1"


def test_committed_answers_survive_the_app(run):
    app = create_app(run)
    client = TestClient(app)
    join(client)
    item, csrf, _ = current(client)
    answer(client, item, csrf, "1", "2")
    del client, app
    gc.collect()
    conn = store.connect(run / "humans.sqlite")
    assert [tuple(r) for r in conn.execute("SELECT item, is_digit, label FROM answers")] == [(item, 1, 2)]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_settings_mismatch_and_not_a_jsma_run_are_clear_errors(run, tmp_path):
    with pytest.raises(ValueError, match="--items 40.*moving"):
        create_app(run, items_per_participant=20)
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(ValueError, match="advkit reproduce jsma"):
        create_app(folder)
    assert not (folder / "humans.sqlite").exists()


def test_the_cli_reports_a_bad_run_folder(tmp_path):
    from typer.testing import CliRunner

    from advkit.cli import app

    r = CliRunner().invoke(app, ["humans", "serve", str(tmp_path)])
    assert r.exit_code == 2 and "advkit reproduce jsma" in r.output


def test_concurrent_consents_stay_balanced(run):
    from concurrent.futures import ThreadPoolExecutor

    app = create_app(run)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: join(TestClient(app)), range(8)))
    per = db_rows(run, "SELECT COUNT(*), COUNT(DISTINCT item) FROM assignments GROUP BY participant")
    assert per == [(N, N)] * 8
    got = Counter(db_rows(run, "SELECT i.source, i.target FROM assignments a JOIN items i ON i.id = a.item "
                               "WHERE i.kind = 'adversarial'"))
    assert len(got) == 36 and max(got.values()) - min(got.values()) <= 1


def test_the_cli_names_the_extra_when_starlette_is_missing(pristine, monkeypatch):
    import sys

    from typer.testing import CliRunner

    from advkit.cli import app

    monkeypatch.setitem(sys.modules, "starlette.applications", None)
    monkeypatch.delitem(sys.modules, "advkit.humans.app")
    r = CliRunner().invoke(app, ["humans", "serve", str(pristine)])
    assert r.exit_code == 2 and "pip install 'advkit[humans]'" in r.output
