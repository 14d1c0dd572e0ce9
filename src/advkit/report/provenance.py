"""The provenance every analysis records: the command, its settings, the versions that ran it, when, and the
SHA-256 of each input file it read (so a result can be traced to the exact run it analysed)."""

from __future__ import annotations

import hashlib
import platform
import time
from pathlib import Path
from typing import Any

import torch

import advkit

__all__ = ["manifest", "sha256_of"]


def sha256_of(path: Path) -> str | None:
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest(command: str = "", settings: dict[str, Any] | None = None,
             inputs: dict[str, str | Path] | None = None) -> dict[str, Any]:
    """``{"command", "settings", "advkit_version", "torch_version", "sklearn_version", "python", "platform",
    "written", "inputs": {name: {"path", "sha256"}}}``; a missing input has ``sha256`` ``None``."""
    try:
        import sklearn

        sk: str | None = sklearn.__version__
    except ImportError:  # pragma: no cover - a dependency, but the manifest must not fail for it
        sk = None
    return {"command": command, "settings": settings or {}, "advkit_version": advkit.__version__,
            "torch_version": torch.__version__, "sklearn_version": sk, "python": platform.python_version(),
            "platform": platform.platform(), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "inputs": {k: {"path": str(v), "sha256": sha256_of(Path(v))} for k, v in (inputs or {}).items()}}
