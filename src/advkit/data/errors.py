"""Errors raised by the data layer. Each names the file at fault and what to do about it."""

from __future__ import annotations

from typing import Any


class DataError(ValueError):
    """A data file is missing, malformed or does not match its checksum."""


class DataNotFoundError(DataError, FileNotFoundError):
    """No copy of a dataset was found in any searched location and none could be downloaded."""


def check_arrays(where: str, images: Any, labels: Any, shape: tuple[int, ...], num_classes: int, name: str) -> None:
    """Refuse a split whose image and label arrays do not belong together or to the dataset (``where`` names the
    split and the folder it came from)."""
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{where}: {images.shape[0]} images but {labels.shape[0]} labels; the image and label files "
                        f"do not belong together. Fetch both again.")
    if tuple(images.shape[1:]) != tuple(shape):
        raise DataError(f"{where}: images of shape {tuple(images.shape[1:])}, expected {tuple(shape)}; these are "
                        f"not {name}'s files.")
    if labels.size and int(labels.max()) >= num_classes:
        raise DataError(f"{where}: label {int(labels.max())} out of range for {num_classes} classes.")
