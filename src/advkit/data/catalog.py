"""What the CLI's ``advkit data`` commands need: fetching a dataset and describing the registry.

``fetch("fashion-mnist")`` returns the folder holding the dataset, after a download only when no local copy was
found; ``describe()`` lists every registered dataset with where (if anywhere) it was found on this machine.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from advkit.data.errors import DataError, DataNotFoundError
from advkit.data.registry import cache_root, candidate_dirs, fetch_files, find_local, get_spec, names
from advkit.progress import ProgressFn

log = logging.getLogger(__name__)


def where_kind(name: str, directory: Path, data_dir: str | Path | None = None) -> str:
    """Which search location ``directory`` is for dataset ``name``: ``"data_dir"``, ``"$ADVKIT_DATA"``,
    ``"system"``, ``"cache"`` or ``"other"``."""
    spec = get_spec(name)
    d = Path(directory)

    def under(base: Path) -> bool:
        return d == base or base in d.parents

    if data_dir is not None and under(Path(data_dir)):
        return "data_dir"
    env = os.environ.get("ADVKIT_DATA")
    if env and under(Path(env)):
        return "$ADVKIT_DATA"
    if any(under(Path(s)) for s in spec.system_dirs):
        return "system"
    if under(cache_root()):
        return "cache"
    return "other"


def fetch(name: str, data_dir: str | Path | None = None, force: bool = False, *,
          progress: ProgressFn | None = None) -> Path:
    """Make a dataset available locally and return its folder.

    A local copy is looked for first (``data_dir``, ``$ADVKIT_DATA``, system folders, the cache; see
    :func:`advkit.data.candidate_dirs`) and returned as it is, with an INFO log line naming where it was found.
    Otherwise the canonical files are downloaded, each checked by SHA-256, into ``data_dir`` when given, else into
    the cache ``$XDG_CACHE_HOME/advkit/NAME``. Local copies are not checksummed (Debian recompresses the
    Fashion-MNIST files); :func:`advkit.data.load` checks their structure.

    Args:
        name: a registered dataset with canonical sources (not ``imagefolder``).
        data_dir: searched first, and where a download goes.
        force: skip the search and download again, replacing the files in the target folder.
        progress: ``progress("download FILENAME", bytes_so_far, total_or_None, "")`` during downloads.

    Returns:
        The folder holding all splits' files.

    Raises:
        DataError: the dataset has no canonical source (an image folder).
        DataNotFoundError: no local copy and the download failed (every searched place and error listed).
    """
    spec = get_spec(name)
    if spec.loader is not None:
        raise DataError(f"{name} has no canonical source to fetch; point --data-dir (data_dir=) at your folder.")
    if not force:
        found = find_local(name, None, data_dir)
        if found is not None:
            log.info("%s: found a local copy in %s (%s); nothing to download", name, found,
                     where_kind(name, found, data_dir))
            return found
    target = Path(data_dir) if data_dir is not None else cache_root() / name
    log.info("%s: downloading into %s", name, target)
    try:
        fetch_files(spec, target, force=force, progress=progress)
    except DataError as e:
        searched = "\n  ".join(str(d) for d in candidate_dirs(spec, data_dir))
        raise DataNotFoundError(
            f"could not fetch {name} into {target}. "
            + ("" if force else f"No local copy was found; searched:\n  {searched}\n")
            + f"Download error: {e}"
        ) from e
    return target


@dataclass(frozen=True)
class DatasetInfo:
    """One line of ``advkit data list``.

    Attributes:
        name: registry name.
        description: one line.
        shape: ``(C, H, W)``, or ``None`` when the data decides it (image folders).
        num_classes: or ``None`` when the data decides it (``imagenet``'s is fixed: 1,000).
        found: the local folder holding all splits, or ``None``.
        where: which search location ``found`` is (``"data_dir"``, ``"$ADVKIT_DATA"``, ``"system"``,
            ``"cache"``), or ``None``.
        note: what :func:`advkit.data.load` will do instead when nothing is found (a fallback, a download).
    """

    name: str
    description: str
    shape: tuple[int, int, int] | None
    num_classes: int | None
    found: Path | None
    where: str | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (paths as strings, the shape as a list)."""
        d = asdict(self)
        d["found"] = None if self.found is None else str(self.found)
        d["shape"] = None if self.shape is None else list(self.shape)
        return d


def info(name: str, data_dir: str | Path | None = None) -> DatasetInfo:
    """Describe one registered dataset and where it is on this machine (never downloads)."""
    spec = get_spec(name)
    found = find_local(name, None, data_dir)
    note = None
    if spec.loader is not None:
        what = "ImageNet-format images (class index fixed)" if spec.classes else "your own images"
        note = f"{what}; pass --data-dir (data_dir=) or use $ADVKIT_DATA/{name}"
    elif found is None:
        fallback = spec.fallback_where() if spec.fallback_where is not None else None
        if fallback is not None:
            note = f"canonical files not found; load() falls back to the subset at {fallback}"
        else:
            note = f"not found locally; `advkit data fetch {name}` downloads it"
    fixed = spec.loader is None
    return DatasetInfo(
        name=name, description=spec.description,
        shape=spec.shape if fixed else None, num_classes=len(spec.classes) or None,
        found=found, where=None if found is None else where_kind(name, found, data_dir), note=note,
    )


def describe(data_dir: str | Path | None = None) -> list[DatasetInfo]:
    """:func:`info` for every registered dataset, sorted by name."""
    return [info(n, data_dir) for n in names()]
