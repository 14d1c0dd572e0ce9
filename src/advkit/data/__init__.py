"""Datasets: registry, local discovery, canonical downloads with checksums, and loaders.

``advkit.data.load("fashion-mnist", split="test", limit=None)`` returns a :class:`Dataset` with ``.x`` (float32
in ``[0, 1]``, ``(N, C, H, W)``), ``.y`` (int64) and ``.classes``. ``load("imagefolder", split="val",
data_dir=ROOT, size=224)`` reads your own images, ``load("imagenet", split="val", data_dir=ROOT)`` ImageNet (or a
part of it) with ImageNet's class index (see :mod:`advkit.data.imagefolder`). ``fetch(name)`` makes a
dataset available locally; ``describe()`` says what is registered and where it was found.
"""

from advkit.data import builtin as _builtin  # noqa: F401  (registers the built-in datasets)
from advkit.data import imagefolder as _imagefolder  # noqa: F401  (registers "imagefolder")
from advkit.data.builtin import TrainTestLeakWarning, warn_if_seen_in_training  # noqa: E402
from advkit.data.catalog import DatasetInfo, describe, fetch, info
from advkit.data.download import RemoteFile, download, sha256_of
from advkit.data.errors import DataError, DataNotFoundError
from advkit.data.idx import read_idx
from advkit.data.imagefolder import index_folder, load_imagefolder, read_labels_file
from advkit.data.imagenet import IMAGENET_NAMES, IMAGENET_WNIDS, imagenet_index
from advkit.data.registry import (
    Dataset,
    DatasetSpec,
    cache_root,
    candidate_dirs,
    describe_selection,
    fetch_files,
    find_local,
    get_spec,
    load,
    locate,
    names,
    register,
    subset_indices,
)

__all__ = [
    "DataError", "DataNotFoundError", "Dataset", "IMAGENET_NAMES", "IMAGENET_WNIDS", "imagenet_index", "index_folder",
    "DatasetInfo", "DatasetSpec", "RemoteFile", "cache_root",
    "candidate_dirs", "describe", "download", "fetch", "fetch_files", "find_local", "get_spec", "info", "load",
    "load_imagefolder", "locate", "names", "read_idx", "read_labels_file", "register", "sha256_of",
    "TrainTestLeakWarning", "describe_selection", "subset_indices", "warn_if_seen_in_training",
]
