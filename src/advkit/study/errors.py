"""The errors of the study layer: an invalid experiment file, and a run directory that cannot be (re)used.

:class:`RunExistsError` is shared by every command that writes a run directory (``advkit transfer``,
``advkit attack``, the reproductions): a finished run is never overwritten without ``force``.
"""

from __future__ import annotations

__all__ = ["ConfigError", "RunConfigMismatchError", "RunExistsError"]


class ConfigError(ValueError):
    """The experiment file is invalid; ``problems`` lists ``"field: what is wrong"`` lines."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid experiment config:\n  " + "\n  ".join(self.problems))


class RunExistsError(ValueError):
    """The output directory already holds a finished run."""


class RunConfigMismatchError(ValueError):
    """The directory holds an unfinished run of a different experiment."""
