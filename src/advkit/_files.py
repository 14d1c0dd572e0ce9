"""Atomic file writes, shared by every layer: a reader never sees a half-written file, and a write that fails
(or is killed) leaves the previous file, if any, as it was.

The new content goes to a temporary file in the destination's folder (same file system), is flushed to disk and
renamed onto the destination; on any error the temporary file is removed.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "check_writable_dir", "csv_text"]


@contextmanager
def atomic_path(path: str | Path, mode: int | None = 0o644) -> Iterator[Path]:
    """A temporary path next to ``path``; when the block succeeds it is synced and renamed onto ``path``.

    Args:
        path: the destination; its folder is created if missing.
        mode: permissions of the result (``mkstemp`` creates files 0600); ``None`` keeps them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, mode: int | None = 0o644) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, mode) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str, mode: int | None = 0o644) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def check_writable_dir(path: str | Path, what: str = "--out") -> None:
    """``ValueError`` naming the problem when the folder ``path`` could not be created or written: a file in the
    way (at ``path`` or above it), or a folder without write permission. Creates and writes nothing, so a command
    checks its output folder before the work, not after it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path} is a file, not a folder; choose another {what} or remove the file")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{what} {path}: {probe} is a file, so no folder can be made under it; choose another "
                         f"{what}")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise ValueError(f"{what} {path}: cannot write in {probe} ({e.strerror or e}); choose a folder you can "
                         f"write to") from None


def csv_text(rows: list[dict[str, Any]]) -> str:
    """Records as CSV text: the columns are every key in first-seen order, ``None`` is empty, and values that are
    dicts are left out (serialise them first to keep them)."""
    buf = io.StringIO()
    if rows:
        fields = list(dict.fromkeys(k for r in rows for k in r))
        w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items() if not isinstance(v, dict)})
    return buf.getvalue()
