"""What a folder given as a run is (for the messages of the commands that read finished runs): missing, a file, an
unfinished transfer run, a transfer run, a JSMA run, or a run of another command, named by the command it records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from advkit.study.runlock import LOCK_NAME

__all__ = ["TRANSFER", "JSMA", "describe_run", "run_kind"]

TRANSFER = "a transfer run (advkit transfer)"
JSMA = "a JSMA run (advkit reproduce jsma)"


def run_kind(results: Any, root: Path) -> str:
    """What wrote the finished run in ``root`` from its ``results.json`` (parsed): :data:`TRANSFER` (``cells``),
    :data:`JSMA` (a ``summary`` beside ``records.csv``, or pooled ``sets``), or ``"a run of `COMMAND`"`` from the
    command it records, else ``"a results.json advkit does not recognise"``."""
    if not isinstance(results, dict):
        return "a results.json advkit does not recognise"
    if "cells" in results:
        return TRANSFER
    if ("sets" in results and "whole" in results) or ("summary" in results and (root / "records.csv").is_file()):
        return JSMA
    nested = [results.get(k) for k in ("meta", "extra", "provenance", "summary")]
    commands = [results.get("command"), *(d.get("command") for d in nested if isinstance(d, dict))]
    command = next((c for c in commands if isinstance(c, str) and c.strip()), None)
    if command is not None:
        words = command.split()
        return f"a run of `{' '.join(words[:3])}{' ...' if len(words) > 3 else ''}`"
    return "a results.json advkit does not recognise"


def describe_run(root: str | Path) -> str:
    """``"ROOT does not exist"``, ``"ROOT is a file"``, ``"ROOT is an unfinished transfer run (no
    results.json yet)"``, ``"ROOT is a transfer run (advkit transfer)"``, and so on: what the path is."""
    root = Path(root)
    if not root.exists():
        return f"{root} does not exist"
    if not root.is_dir():
        return f"{root} is a file"
    results = root / "results.json"
    if not results.is_file():
        if (root / "state" / "plan.json").is_file():
            return f"{root} is an unfinished transfer run (no results.json yet)"
        if not any(p.name != LOCK_NAME for p in root.iterdir()):  # a lock left by a killed run holds nothing
            return f"{root} is an empty folder"
        return f"{root} is a folder without results.json (no finished run)"
    try:
        payload = json.loads(results.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return f"{root} holds a results.json that is not valid JSON ({e})"
    return f"{root} is {run_kind(payload, root)}"
