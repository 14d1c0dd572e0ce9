"""One writer per run directory: a lock that a second ``advkit transfer`` on the same ``--out`` runs into at once.

The lock is ``fcntl.flock`` on ``OUT/.advkit.lock``, so the operating system releases it when its process ends, by
any means (a ``SIGKILL`` leaves no stale lock). The holder writes who it is into the file (pid, host, start time,
command), which is what the refused process reports. The file is removed when the lock is released; a killed run
leaves it behind unlocked, and the next run takes it over. Folders that taking the lock created are removed again
if the run leaves them empty (a refused run leaves nothing behind).

``flock`` is advisory and per host: on a network file system that does not pass it on, two machines are not kept
apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LOCK_NAME", "RunLockedError", "run_lock"]

LOCK_NAME = ".advkit.lock"


class RunLockedError(ValueError):
    """Another process holds the run directory's lock."""


def _holder(fd: int) -> str:
    """Who holds the lock, from what it wrote into the lock file."""
    try:
        info = json.loads(os.pread(fd, 65536, 0).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        info = None
    if not isinstance(info, dict):  # taken a moment ago, its details not written yet
        return "another process"
    where = f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}"
    return f"another advkit process ({where}{': ' + str(info['command']) if info.get('command') else ''})"


def _make_dirs(root: Path) -> list[Path]:
    """Create ``root`` and missing parents; the folders created, outermost first."""
    missing = [p for p in (root, *root.parents) if not p.exists()][::-1]
    for p in missing:
        p.mkdir(exist_ok=True)
    return missing


def _open_locked(path: Path) -> int:
    """Open ``path`` and take its lock without waiting; the locked descriptor.

    Raises:
        RunLockedError: another process holds the lock.
    """
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"{path.parent} is in use by {holder}; two runs in one folder would compute every shard twice. "
                f"Wait for it to finish, or stop it (a stopped run resumes: rerun the same command), or choose "
                f"another --out") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder removed the file as we opened it: lock the new one
    raise RuntimeError(f"{path}: the lock file keeps being replaced; is another program deleting it?")


@contextlib.contextmanager
def run_lock(root: str | Path, command: str = "") -> Iterator[Path]:
    """Hold the lock of the run directory ``root`` (created if missing) for the block.

    Args:
        root: the run directory.
        command: the command line, written into the lock file for a refused process to report.

    Yields:
        The lock file's path.

    Raises:
        RunLockedError: another process holds the lock (raised at once, never waits).
    """
    root = Path(root)
    created = _make_dirs(root)
    path = root / LOCK_NAME
    try:
        fd = _open_locked(path)
    except BaseException:
        _remove_empty(created)
        raise
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "command": command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # while still locked: a process that opened it meanwhile finds it gone and retries
        os.close(fd)  # releases the lock
        _remove_empty(created)


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders (innermost first) that are still empty."""
    for p in reversed(folders):
        with contextlib.suppress(OSError):
            p.rmdir()
