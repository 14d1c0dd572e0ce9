"""The web study survives a crash (issue 28): "a server killed mid-study loses no committed answer".

The study server (uvicorn over ``create_app``, the human half of Papernot et al., "The Limitations of Deep Learning
in Adversarial Settings", EuroS&P 2016) runs as its own OS process; simulated participants answer at once and the
process gets SIGKILL once ``KILL_AT`` answers are acknowledged (303). Then: every acknowledged answer is in
``humans.sqlite``, the file passes ``PRAGMA integrity_check``, no answer is stored twice, and nothing is stored that
was never sent. A new server on the same run folder lets the same participants (same cookies) resubmit the answer
that was in flight (as a browser does after an error), resume at their first unanswered item, and finish; the final
rows are exactly the answers acknowledged across both server lives.
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.humans_server import ITEMS, copy_run, free_port, i28_run_fixture, read_form, spawn_server  # noqa: F401  (i28_run_fixture: the session's JSMA run)

pytest.importorskip("starlette", reason="the web study needs pip install 'advkit[humans]'")
pytest.importorskip("uvicorn", reason="the web study needs pip install 'advkit[humans]'")
httpx = pytest.importorskip("httpx", reason="the crash test needs httpx (a dev dependency)")

PARTICIPANTS, KILL_AT = 10, 100  # 10 x 24 = 240 answers in the study; SIGKILL after 100 are acknowledged


@dataclass
class Person:
    """One simulated participant: its cookie jar, pseudonym, and the answer it sent without getting a reply."""

    seed: int
    cookies: Any = None
    pid: str = ""
    pending: dict[str, str] | None = None
    rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)


async def _answer_until_done(client: Any, person: Person, acked: set[tuple[str, int]]) -> None:
    """GET /item, POST /answer until /item redirects to /done; records each 303-acknowledged answer."""
    while True:
        r = await client.get("/item")
        if r.status_code == 303:
            assert r.headers["location"] == "/done"
            return
        assert r.status_code == 200, r.text[:200]
        form = read_form(r.text).inputs
        person.pending = {"csrf": form["csrf"], "item": form["item"], "is_digit": str(int(person.rng.integers(2))),
                          "label": str(int(person.rng.integers(10)))}
        r = await client.post("/answer", data=person.pending)
        assert r.status_code == 303 and r.headers["location"] == "/item", (r.status_code, r.text[:200])
        acked.add((person.pid, int(person.pending["item"])))
        person.pending = None


async def _first_life(base: str, people: list[Person], acked: set[tuple[str, int]], server: Any) -> list[Any]:
    """Consent everyone, answer at once, SIGKILL ``server`` once ``KILL_AT`` answers are acknowledged; returns what
    each participant's task ended with (a transport error once the server is gone)."""

    async def walk(person: Person) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30.0) as client:
            r = await client.get("/")
            r = await client.post("/consent", data={"csrf": read_form(r.text).inputs["csrf"]})
            assert r.status_code == 303
            person.pid, person.cookies = client.cookies["advkit_participant"], client.cookies
            await _answer_until_done(client, person, acked)

    tasks = [asyncio.create_task(walk(p)) for p in people]
    while len(acked) < KILL_AT and not all(t.done() for t in tasks):
        await asyncio.sleep(0.002)
    server.kill()  # SIGKILL: no shutdown hook, no flush; whatever request is in flight is cut
    return list(await asyncio.gather(*tasks, return_exceptions=True))


async def _second_life(base: str, people: list[Person], acked: set[tuple[str, int]],
                       order: dict[str, list[int]]) -> list[tuple[str, int, str]]:
    """The same participants (same cookies) come back: resubmit the in-flight answer, check the resumed item and
    progress, finish. Returns ``(pid, item served first, progress text)`` per participant."""
    resumed: list[tuple[str, int, str]] = []

    async def walk(person: Person) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30.0, cookies=person.cookies) as client:
            if person.pending is not None:  # the browser's retry: stored once, whether or not it was committed
                r = await client.post("/answer", data=person.pending)
                assert r.status_code == 303, r.text[:200]
                acked.add((person.pid, int(person.pending["item"])))
                person.pending = None
            r = await client.get("/item")
            page = read_form(r.text)
            resumed.append((person.pid, int(page.inputs.get("item", -1)), page.progress.strip()))
            await _answer_until_done(client, person, acked)

    await asyncio.gather(*(walk(p) for p in people))
    return resumed


def _rows(db: Path) -> tuple[list[tuple[str, int]], str, int]:
    """The answers' ``(participant, item)`` keys, ``PRAGMA integrity_check`` and ``COUNT(DISTINCT ...)``."""
    with closing(sqlite3.connect(db)) as con:
        keys = [(p, int(i)) for p, i in con.execute("SELECT participant, item FROM answers")]
        check = con.execute("PRAGMA integrity_check").fetchone()[0]
        distinct = con.execute("SELECT COUNT(*) FROM (SELECT DISTINCT participant, item FROM answers)").fetchone()[0]
    return keys, check, int(distinct)


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory, i28_jsma_run: Path) -> dict[str, Any]:
    """Run both server lives on a copy of the session's run; returns what the tests check."""
    run = copy_run(i28_jsma_run, tmp_path_factory.mktemp("i28crash"))
    db, port = run / "humans.sqlite", free_port()
    people = [Person(seed=i) for i in range(PARTICIPANTS)]
    acked: set[tuple[str, int]] = set()
    server = spawn_server(run, port)
    try:
        ends = asyncio.run(_first_life(f"http://127.0.0.1:{port}", people, acked, server))
    finally:
        server.kill()
        server.wait(10)
    out: dict[str, Any] = {"returncode": server.returncode, "ends": ends, "acked1": set(acked),
                           "pending": {(p.pid, int(p.pending["item"])) for p in people if p.pending is not None}}
    out["rows1"], out["check1"], out["distinct1"] = _rows(db)
    with closing(sqlite3.connect(db)) as con:
        order: dict[str, list[int]] = {}
        for pid, item in con.execute("SELECT participant, item FROM assignments ORDER BY participant, position"):
            order.setdefault(pid, []).append(int(item))
    server = spawn_server(run, port)
    try:
        out["resumed"] = asyncio.run(_second_life(f"http://127.0.0.1:{port}", people, acked, order))
    finally:
        server.terminate()
        server.wait(10)
    out["rows2"], out["check2"], out["distinct2"] = _rows(db)
    with closing(sqlite3.connect(db)) as con:
        out["unfinished"] = con.execute("SELECT COUNT(*) FROM participants WHERE finished IS NULL").fetchone()[0]
    out.update(acked=acked, order=order, people=people)
    return out


def test_sigkill_mid_study_loses_no_acknowledged_answer(crashed):
    assert crashed["returncode"] == -9  # it was killed, not shut down
    assert all(isinstance(e, httpx.TransportError) for e in crashed["ends"])  # every participant was cut mid-walk
    acked, rows = crashed["acked1"], crashed["rows1"]
    assert KILL_AT <= len(acked) < PARTICIPANTS * ITEMS  # killed mid-study
    assert crashed["check1"] == "ok"
    assert len(rows) == crashed["distinct1"]  # no answer stored twice
    assert acked <= set(rows), f"{len(acked - set(rows))} acknowledged answers lost"
    assert set(rows) - acked <= crashed["pending"]  # only an answer in flight may be stored unacknowledged
    print(f"\nSIGKILL after {len(acked)} acknowledged answers: {len(rows)} rows stored, {len(crashed['pending'])} "
          f"answers in flight, {len(set(rows) - acked)} of them committed before the kill")


def test_restarted_server_resumes_each_participant_and_loses_nothing(crashed):
    acked, order = crashed["acked"], crashed["order"]
    for pid, item, progress in crashed["resumed"]:
        done_before = [i for i in order[pid] if (pid, i) in crashed["acked1"] | crashed["pending"]]
        assert item == order[pid][len(done_before)]  # the first unanswered item in the participant's order
        assert progress == f"{len(done_before)} / {ITEMS}"
    rows = crashed["rows2"]
    assert crashed["check2"] == "ok" and len(rows) == crashed["distinct2"]
    assert set(rows) == acked and len(rows) == len(acked) == PARTICIPANTS * ITEMS
    assert crashed["unfinished"] == 0
