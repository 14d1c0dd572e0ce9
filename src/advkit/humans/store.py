"""The study's answers on disk: ``RUN_DIR/humans.sqlite`` (issue 28's shared contract).

The human perception study of Papernot et al., "The Limitations of Deep Learning in Adversarial Settings" (EuroS&P
2016), asked people whether an adversarial sample is a digit and which digit it is. This module owns the SQLite file
those answers go to: its schema (``meta``, ``items``, ``participants``, ``assignments``, ``answers``), WAL journal, a
5 s busy timeout and foreign keys on every connection, and one short transaction per operation. Nothing personal is
stored: a participant is a random pseudonym (``secrets.token_urlsafe``), never an IP address or a user agent.

Use one connection per request or thread (:func:`connect`); every write here is its own ``BEGIN IMMEDIATE``
transaction, so a server killed mid-study keeps every committed answer. Writers of one process queue on a Python
lock before they ask for SQLite's write lock (:data:`WRITE_LOCK`), in arrival order: under 50 participants at once,
SQLite's own busy wait (sleep and retry) let a few requests wait past the busy timeout and fail with "database is
locked"; queued in the process, none does. Writers from other processes still wait on SQLite's busy timeout.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["DB_NAME", "SCHEMA", "connect", "create_participant", "export_rows", "item_png", "meta", "next_item",
           "participant_exists", "progress", "record_answer", "transaction", "write_study"]

DB_NAME = "humans.sqlite"
BUSY_TIMEOUT_MS = 5000
WRITE_LOCK = threading.Lock()
"""Held by every write transaction of this process (see the module docstring)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS items(
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK(kind IN ('adversarial','control','attention')),
    source INTEGER NOT NULL,
    target INTEGER,
    example INTEGER,
    clean_index INTEGER,
    model_pred INTEGER NOT NULL,
    png BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS participants(
    id TEXT PRIMARY KEY, created REAL NOT NULL, consented REAL, finished REAL);
CREATE TABLE IF NOT EXISTS assignments(
    participant TEXT NOT NULL REFERENCES participants(id),
    position INTEGER NOT NULL,
    item INTEGER NOT NULL REFERENCES items(id),
    shown REAL,
    PRIMARY KEY(participant, position), UNIQUE(participant, item));
CREATE TABLE IF NOT EXISTS answers(
    participant TEXT NOT NULL REFERENCES participants(id),
    item INTEGER NOT NULL REFERENCES items(id),
    is_digit INTEGER NOT NULL CHECK(is_digit IN (0,1)),
    label INTEGER NOT NULL,
    seconds REAL NOT NULL,
    answered_at REAL NOT NULL,
    PRIMARY KEY(participant, item));
"""

EXPORT_COLUMNS = ("participant", "item", "kind", "source", "target", "example", "clean_index", "model_pred",
                  "is_digit", "label", "seconds", "answered_at")


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection to the study file at ``path`` (created with the schema when missing): WAL journal, busy timeout
    5000 ms, foreign keys on, rows as :class:`sqlite3.Row`, autocommit outside :func:`transaction`."""
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA foreign_keys = ON")
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'answers'").fetchone() is None:
        conn.executescript(SCHEMA)
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any error): one writer at a time, all or nothing."""
    with WRITE_LOCK:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def meta(conn: sqlite3.Connection) -> dict[str, Any]:
    """The ``meta`` table as a dict; ``settings`` parsed from its JSON."""
    out: dict[str, Any] = {r["key"]: r["value"] for r in conn.execute("SELECT key, value FROM meta")}
    if "settings" in out:
        out["settings"] = json.loads(out["settings"])
    return out


def write_study(conn: sqlite3.Connection, info: dict[str, str], settings: dict[str, Any],
                items: list[dict[str, Any]]) -> None:
    """Write the study's ``meta`` (``info`` plus ``settings`` as JSON) and its ``items`` in one transaction."""
    with transaction(conn):
        rows = [*info.items(), ("settings", json.dumps(settings, sort_keys=True))]
        conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", rows)
        conn.executemany(
            "INSERT INTO items(id, kind, source, target, example, clean_index, model_pred, png) "
            "VALUES (:id, :kind, :source, :target, :example, :clean_index, :model_pred, :png)", items)


def create_participant(conn: sqlite3.Connection, choose: Any) -> str:
    """Create a consented participant and its assignments in one transaction; returns the pseudonym.

    Args:
        conn: an open connection.
        choose: ``choose(conn, n_participants) -> list[int]``: the item ids in the order shown, computed inside the
            transaction (so concurrent consents see each other's assignments and stay balanced).
    """
    pid = secrets.token_urlsafe(16)
    now = time.time()
    with transaction(conn):
        n = conn.execute("SELECT COUNT(*) FROM participants").fetchone()[0]
        order = choose(conn, n)
        conn.execute("INSERT INTO participants(id, created, consented) VALUES (?, ?, ?)", (pid, now, now))
        conn.executemany("INSERT INTO assignments(participant, position, item) VALUES (?, ?, ?)",
                         [(pid, k, int(item)) for k, item in enumerate(order)])
    return pid


def participant_exists(conn: sqlite3.Connection, participant: str | None) -> bool:
    """Whether ``participant`` is a pseudonym in the study."""
    if not participant:
        return False
    return conn.execute("SELECT 1 FROM participants WHERE id = ?", (participant,)).fetchone() is not None


def progress(conn: sqlite3.Connection, participant: str) -> tuple[int, int]:
    """``(answered, assigned)`` for ``participant``."""
    answered = conn.execute("SELECT COUNT(*) FROM answers WHERE participant = ?", (participant,)).fetchone()[0]
    total = conn.execute("SELECT COUNT(*) FROM assignments WHERE participant = ?", (participant,)).fetchone()[0]
    return int(answered), int(total)


def next_item(conn: sqlite3.Connection, participant: str) -> int | None:
    """The participant's first unanswered item in their order (its ``shown`` time set on first serve), or
    ``None`` when every assigned item is answered."""
    row = conn.execute(
        "SELECT a.item, a.shown FROM assignments a LEFT JOIN answers r ON r.participant = a.participant "
        "AND r.item = a.item WHERE a.participant = ? AND r.item IS NULL ORDER BY a.position LIMIT 1",
        (participant,)).fetchone()
    if row is None:
        return None
    if row["shown"] is None:
        with transaction(conn):
            conn.execute("UPDATE assignments SET shown = ? WHERE participant = ? AND item = ? AND shown IS NULL",
                         (time.time(), participant, row["item"]))
    return int(row["item"])


def record_answer(conn: sqlite3.Connection, participant: str, item: int, is_digit: int, label: int) -> str:
    """Store one answer in one transaction.

    Returns:
        ``"saved"``, ``"repeat"`` (the item was answered before: nothing written) or ``"unassigned"`` (the item is
        not this participant's: nothing written). The participant's ``finished`` time is set with the last answer.
    """
    now = time.time()
    with transaction(conn):
        row = conn.execute("SELECT shown FROM assignments WHERE participant = ? AND item = ?",
                           (participant, item)).fetchone()
        if row is None:
            return "unassigned"
        shown = row["shown"] if row["shown"] is not None else now
        cur = conn.execute(
            "INSERT INTO answers(participant, item, is_digit, label, seconds, answered_at) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(participant, item) DO NOTHING",
            (participant, item, is_digit, label, max(0.0, now - shown), now))
        if cur.rowcount == 0:
            return "repeat"
        answered, total = progress(conn, participant)
        if answered >= total:
            conn.execute("UPDATE participants SET finished = ? WHERE id = ?", (now, participant))
    return "saved"


def item_png(conn: sqlite3.Connection, participant: str, item: int) -> bytes | None:
    """The PNG of ``item`` if it is assigned to ``participant`` (else ``None``)."""
    row = conn.execute("SELECT i.png FROM items i JOIN assignments a ON a.item = i.id "
                       "WHERE a.participant = ? AND i.id = ?", (participant, item)).fetchone()
    return None if row is None else bytes(row["png"])


def export_rows(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every answer joined with its item, in the columns :data:`EXPORT_COLUMNS`, ordered by time."""
    rows = conn.execute(
        "SELECT r.participant, r.item, i.kind, i.source, i.target, i.example, i.clean_index, i.model_pred, "
        "r.is_digit, r.label, r.seconds, r.answered_at FROM answers r JOIN items i ON i.id = r.item "
        "ORDER BY r.answered_at, r.participant, r.item").fetchall()
    return [dict(zip(EXPORT_COLUMNS, tuple(r), strict=True)) for r in rows]
