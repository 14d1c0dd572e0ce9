"""The errors of the study layer: an invalid experiment file, and a run directory that cannot be (re)used.

:class:`RunExistsError` is shared by every command that writes a run directory (``advkit transfer``,
``advkit attack``, the reproductions): a finished run is never overwritten without ``force``.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

__all__ = ["ConfigError", "RunConfigMismatchError", "RunExistsError", "missing_report"]


class ConfigError(ValueError):
    """The experiment file is invalid; ``problems`` lists ``"field: what is wrong"`` lines."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid experiment config:\n  " + "\n  ".join(self.problems))


class RunExistsError(ValueError):
    """The output directory already holds a finished run."""


class RunConfigMismatchError(ValueError):
    """The directory holds an unfinished run of a different experiment."""


def missing_report(root: Path) -> str:
    """Why the finished run in ``root`` has no ``report.md`` and how to write it, told from the command that
    finished it (``manifest.json``): made with ``--no-report``, run from Python (``run_study`` writes none), or
    stopped while writing the report."""
    try:
        command = str(json.loads((root / "manifest.json").read_text(encoding="utf-8")).get("command") or "")
        words = shlex.split(command)
    except (OSError, ValueError, AttributeError):
        command, words = "?", []
    why = ("made with --no-report, so it has no report yet" if "--no-report" in words else
           "without a report (it was run from Python: run_study writes none)" if not command else
           "whose report is missing (the run was stopped while writing it?)")
    return (f"{root} holds a finished run {why}: `advkit report {shlex.quote(str(root))}` writes report.md and "
            f"report.html from its results; pass --force to run the study again")
