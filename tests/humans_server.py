"""Helpers for the web study's end-to-end tests and load benchmark (issue 28): a small finished JSMA run, the
Starlette app served by a real uvicorn server in a background thread (or in its own process, to be killed), an
HTML form reader, and simulated participants that walk the study's routes with httpx (consent, then item / answer
pairs).

The study is the human half of Papernot et al., "The Limitations of Deep Learning in Adversarial Settings",
EuroS&P 2016 ("is this a numeric digit?" / "what digit is it?"); the routes and tables are issue 28's contract.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def make_jsma_run(out: Path, samples: int = 4) -> Path:
    """A small finished ``advkit reproduce jsma`` run on Fashion-MNIST's LeNet (``samples`` x 9 targeted attacks;
    about 4 s on one thread). Needs the Fashion-MNIST files (the caller skips without them)."""
    from advkit.reproduce.jsma import run_jsma

    return run_jsma(out, dataset="fashion-mnist", model="lenet", samples=samples).path


ITEMS, ATTENTION = 24, 3  # the tests' study settings: items per participant, attention checks among them
_SESSION_RUN: dict[str, Path] = {}


@pytest.fixture(scope="session", name="i28_jsma_run")
def i28_run_fixture(tmp_path_factory: pytest.TempPathFactory, fmnist_test: Any) -> Path:
    """One small JSMA run for the session with its study file made (``ITEMS`` / ``ATTENTION``, seed 0, no
    participant yet); skips without Fashion-MNIST (through ``fmnist_test``). Tests start their study on a
    :func:`copy_run` copy, so each has its own ``humans.sqlite``. Built once per process: each test module that
    imports this fixture gets its own session-scoped definition, so the run is cached here."""
    from advkit.humans.app import create_app

    if "run" not in _SESSION_RUN:
        run = make_jsma_run(tmp_path_factory.mktemp("i28run") / "jsma")
        create_app(run, items_per_participant=ITEMS, attention_checks=ATTENTION, seed=0)
        _SESSION_RUN["run"] = run
    return _SESSION_RUN["run"]


def copy_run(run: Path, parent: Path) -> Path:
    """A copy of ``run`` (its study file included) under ``parent``, while no server has it open."""
    dest = parent / run.name
    shutil.copytree(run, dest)
    return dest


@contextmanager
def serve(app: Any, host: str = "127.0.0.1", timeout: float = 15.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port of ``host`` in a daemon thread; yields the base URL (no trailing
    slash) once the server accepts connections, and stops the server on exit."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="uvicorn-test")
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"uvicorn did not start on {host}:{port} within {timeout} s")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


class FormReader(HTMLParser):
    """Collects the ``value`` of every ``<input>`` by ``name`` (hidden fields) and the text of the element with
    id ``progress``."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: dict[str, str] = {}
        self.ids: set[str] = set()
        self.progress = ""
        self._in_progress = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "input" and a.get("type", "text") == "hidden" and "name" in a:
            self.inputs[a["name"]] = a.get("value", "")
        self._in_progress = a.get("id") == "progress"

    def handle_data(self, data: str) -> None:
        if self._in_progress:
            self.progress += data

    def handle_endtag(self, tag: str) -> None:
        self._in_progress = False


def read_form(html: str) -> FormReader:
    """Parse one page's hidden inputs, element ids and progress text."""
    reader = FormReader()
    reader.feed(html)
    return reader


@dataclass
class LoadResult:
    """What the simulated participants saw: every answer the server acknowledged with a 303, the POST /answer
    latencies (seconds), every non-303/200 status met, and the wall time of the whole load."""

    acknowledged: set[tuple[str, int]] = field(default_factory=set)
    latencies: list[float] = field(default_factory=list)
    bad_status: list[tuple[str, int]] = field(default_factory=list)
    repeats: int = 0
    participants: list[str] = field(default_factory=list)
    wall: float = 0.0

    def percentiles(self) -> dict[str, float]:
        """p50 / p95 / p99 / max of POST /answer latency, in milliseconds."""
        ms = np.asarray(self.latencies) * 1000.0
        return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
                "p99": float(np.percentile(ms, 99)), "max": float(ms.max())}


async def _participant(base: str, n_answers: int, result: LoadResult, seed: int, repeat_first: bool) -> None:
    import httpx

    rng = np.random.default_rng(seed)
    async with httpx.AsyncClient(base_url=base, follow_redirects=False, timeout=30.0) as client:

        def check(route: str, r: httpx.Response, *ok: int) -> None:
            if r.status_code not in ok:
                result.bad_status.append((route, r.status_code))
                raise RuntimeError(f"{route}: HTTP {r.status_code}: {r.text[:200]}")

        r = await client.get("/")
        check("GET /", r, 200)
        csrf = read_form(r.text).inputs["csrf"]
        r = await client.post("/consent", data={"csrf": csrf})
        check("POST /consent", r, 303)
        pid = client.cookies["advkit_participant"]
        result.participants.append(pid)
        for k in range(n_answers):
            r = await client.get("/item")
            check("GET /item", r, 200, 303)
            if r.status_code == 303:
                break
            form = read_form(r.text).inputs
            data = {"csrf": form["csrf"], "item": form["item"], "is_digit": str(int(rng.integers(2))),
                    "label": str(int(rng.integers(10)))}
            t0 = time.perf_counter()
            r = await client.post("/answer", data=data)
            result.latencies.append(time.perf_counter() - t0)
            check("POST /answer", r, 303)
            result.acknowledged.add((pid, int(form["item"])))
            if repeat_first and k == 0:  # a double submit: acknowledged again, never a second row
                r = await client.post("/answer", data=data)
                check("POST /answer (repeat)", r, 303)
                result.repeats += 1


def run_load(base: str, participants: int, answers: int, *, repeat_every: int = 5) -> LoadResult:
    """``participants`` simulated people, all at once (one asyncio task and one cookie jar each), each consenting
    then answering ``answers`` items with random answers; every ``repeat_every``-th one also resubmits its first
    answer. Failures of single participants are collected in ``bad_status``, not raised."""
    result = LoadResult()

    async def main() -> None:
        tasks = [_participant(base, answers, result, seed=i, repeat_first=repeat_every > 0 and i % repeat_every == 0)
                 for i in range(participants)]
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, BaseException) and not result.bad_status:
                raise outcome

    t0 = time.perf_counter()
    asyncio.run(main())
    result.wall = time.perf_counter() - t0
    return result


def answer_rows(db: Path) -> list[tuple[str, int, int, int, float]]:
    """Every ``(participant, item, is_digit, label, seconds)`` row of ``db``'s answers table."""
    with closing(sqlite3.connect(db)) as con:
        return [tuple(r) for r in con.execute("SELECT participant, item, is_digit, label, seconds FROM answers")]


SERVER_SCRIPT = """
import sys, uvicorn
from advkit.humans.app import create_app
app = create_app(sys.argv[1], items_per_participant=int(sys.argv[3]), attention_checks=int(sys.argv[4]), seed=0)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
"""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_server(run: Path, port: int, *, items: int = ITEMS, attention: int = ATTENTION,
                 timeout: float = 60.0) -> subprocess.Popen[bytes]:
    """Start ``create_app(run)`` under uvicorn in its own OS process on 127.0.0.1:``port`` (so a test can SIGKILL
    it); returns once the port accepts connections. Raises ``RuntimeError`` if the process exits or never
    listens; the caller kills / waits for the process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, str(run), str(port), str(items), str(attention)],
                            env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the study server exited with {proc.returncode} before listening on port {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"the study server did not listen on port {port} within {timeout} s")
