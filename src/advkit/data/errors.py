"""Errors raised by the data layer. Each names the file at fault and what to do about it."""

from __future__ import annotations


class DataError(ValueError):
    """A data file is missing, malformed or does not match its checksum."""


class DataNotFoundError(DataError, FileNotFoundError):
    """No copy of a dataset was found in any searched location and none could be downloaded."""
