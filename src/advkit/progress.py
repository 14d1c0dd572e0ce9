"""The one progress-callback type of the library.

Every long-running function (a study, a reproduction, an analysis, training, a batched attack) reports through a
``progress`` argument of this type; the CLI passes :func:`advkit.cli.common.bars` (rich bars on a terminal, one
line per step in a log), Python callers any function or ``None``::

    def show(stage: str, done: int, total: int, detail: str) -> None:
        print(f"{stage}: {done}/{total} {detail}")
"""

from __future__ import annotations

from collections.abc import Callable

ProgressFn = Callable[[str, int, int | None, str], None]
"""``progress(stage, done, total, detail)``: ``done`` of ``total`` steps of ``stage`` are finished (``total`` is
``None`` when unknown: a download without a size); ``detail`` is a short free text (an accuracy, a loss, the
queries spent) or ``""``."""


def report(progress: ProgressFn | None, stage: str, done: int, total: int | None, detail: str = "") -> None:
    """Call ``progress`` when there is one."""
    if progress is not None:
        progress(stage, done, total, detail)


__all__ = ["ProgressFn", "report"]
