"""Downloading dataset files from their canonical sources, verified by SHA-256 and written atomically."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from advkit.data.errors import DataError
from advkit.progress import ProgressFn, report

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name on disk, the addresses it can be fetched from (tried in order) and its
    SHA-256 digest."""

    filename: str
    urls: tuple[str, ...]
    sha256: str


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, expected: str) -> None:
    """Raise :class:`DataError` naming the file if its SHA-256 digest is not ``expected``."""
    got = sha256_of(path)
    if got != expected:
        raise DataError(
            f"{path}: checksum mismatch (SHA-256 {got}, expected {expected}). The file is corrupt or not the "
            f"canonical one; delete it and run `advkit data fetch` again."
        )


def _fetch_one(url: str, out_path: Path, timeout: float, progress: ProgressFn | None, stage: str) -> str:
    """Stream ``url`` into ``out_path``; return the SHA-256 of what arrived. Raises on a short read."""
    h = hashlib.sha256()
    with open(out_path, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
        total = resp.headers.get("Content-Length")
        total_n = int(total) if total and total.isdigit() else None
        done = 0
        for chunk in iter(lambda: resp.read(_CHUNK), b""):
            out.write(chunk)
            h.update(chunk)
            done += len(chunk)
            report(progress, stage, done, total_n)
    if total_n is not None and done != total_n:
        raise OSError(f"connection closed after {done} of {total_n} bytes")
    return h.hexdigest()


def download(remote: RemoteFile, dest_dir: Path, *, timeout: float = 60.0,
             progress: ProgressFn | None = None) -> Path:
    """Fetch ``remote`` into ``dest_dir``, trying each address in turn, and verify its checksum.

    The bytes go to a temporary ``.part`` file in ``dest_dir`` that is renamed over the final name only once the
    checksum matches, so an interrupted or corrupt download never leaves a file that looks complete, and a failed
    attempt leaves no ``.part`` file behind. An existing file of the same name is replaced only by a verified one.

    Args:
        remote: what to fetch.
        dest_dir: created if missing (and removed again, if still empty, when every address fails).
        timeout: seconds per connection attempt.
        progress: ``progress("download FILENAME", bytes_so_far, total_or_None, "")`` as data arrives.

    Returns:
        The path of the verified file.

    Raises:
        DataError: every address failed (each failure is listed) or the content did not match the checksum.
    """
    dest_dir = Path(dest_dir)
    if not remote.urls:
        raise DataError(f"no download address is known for {remote.filename}; copy it into {dest_dir} by hand.")
    made = [p for p in (dest_dir, *dest_dir.parents) if not p.exists()]
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / remote.filename
    errors: list[str] = []
    for url in remote.urls:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{remote.filename}.", suffix=".part", dir=dest_dir)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            digest = _fetch_one(url, tmp, timeout, progress, f"download {remote.filename}")
            if digest != remote.sha256:
                errors.append(f"{url}: checksum mismatch (SHA-256 {digest}, expected {remote.sha256})")
                continue
            tmp.chmod(0o644)  # mkstemp creates 0600; a dataset file should be as readable as any other
            os.replace(tmp, final)
            log.info("downloaded %s from %s", final, url)
            return final
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            errors.append(f"{url}: {e}")
        finally:
            tmp.unlink(missing_ok=True)
    for d in made:  # leave no empty folders behind a failed download (made is deepest first)
        try:
            d.rmdir()
        except OSError:
            break
    raise DataError(
        f"could not download {remote.filename}:\n  " + "\n  ".join(errors)
        + f"\nIf this machine is offline, copy the file into {dest_dir} or pass --data-dir to a folder that has it."
    )
