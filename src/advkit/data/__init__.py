"""Datasets: registry, local discovery, canonical downloads with checksums, and loaders.

``advkit.data.load("fashion-mnist", split="test", limit=None)`` returns a :class:`Dataset` with ``.x`` (float32
in ``[0, 1]``, ``(N, C, H, W)``), ``.y`` (int64) and ``.classes``.
"""

from advkit.data import builtin as _builtin  # noqa: F401  (registers the built-in datasets)
from advkit.data.download import RemoteFile, download, sha256_of
from advkit.data.errors import DataError, DataNotFoundError
from advkit.data.idx import read_idx
from advkit.data.registry import (
    Dataset,
    DatasetSpec,
    cache_root,
    candidate_dirs,
    fetch_files,
    get_spec,
    load,
    locate,
    names,
    register,
)

__all__ = [
    "DataError", "DataNotFoundError", "Dataset", "DatasetSpec", "RemoteFile", "cache_root", "candidate_dirs",
    "download", "fetch_files", "get_spec", "load", "locate", "names", "read_idx", "register", "sha256_of",
]
