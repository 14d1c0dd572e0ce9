"""ImageNet-1k's class index: the 1,000 WordNet ids in the order torchvision's and timm's models use.

The list ships with advkit (``imagenet_classes.txt``, from timm's ``imagenet_synsets.txt``): class ``i`` is the
``i``-th WordNet id in sorted order, from ``n01440764`` (tench, index 0) to ``n15075141`` (toilet tissue, index
999). :func:`advkit.data.load` with ``"imagenet"`` maps class folders named by WordNet id, and the WordNet ids of
a labels file, through it, so a folder that holds only some classes still gets ImageNet's own indices.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from importlib import resources

__all__ = ["IMAGENET_NAMES", "IMAGENET_WNIDS", "imagenet_index", "is_wnid", "looks_like_imagenet_subset"]

_WNID = re.compile(r"n\d{8}")


def _read() -> tuple[tuple[str, ...], tuple[str, ...]]:
    text = resources.files("advkit.data").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    rows = [line.split("\t", 1) for line in text.splitlines() if line and not line.startswith("#")]
    return tuple(r[0] for r in rows), tuple(r[1].split(",", 1)[0].strip() for r in rows)


IMAGENET_WNIDS, IMAGENET_NAMES = _read()
"""``IMAGENET_WNIDS[i]`` is the WordNet id of ImageNet class ``i``; ``IMAGENET_NAMES[i]`` its first lemma."""

_INDEX = {w: i for i, w in enumerate(IMAGENET_WNIDS)}


def is_wnid(name: str) -> bool:
    """Whether ``name`` is written like a WordNet noun id (``n`` and eight digits)."""
    return _WNID.fullmatch(name) is not None


def imagenet_index(wnid: str) -> int:
    """ImageNet's class index of a WordNet id (``"n01440764"`` -> 0).

    Raises:
        ValueError: ``wnid`` is not one of the 1,000 ImageNet-1k classes.
    """
    try:
        return _INDEX[wnid]
    except KeyError:
        raise ValueError(f"{wnid!r} is not one of the 1,000 ImageNet-1k WordNet ids (n01440764 ... n15075141)"
                         ) from None


def looks_like_imagenet_subset(names: Iterable[str]) -> bool:
    """Whether ``names`` are ImageNet-1k WordNet ids but not all 1,000 of them: their positions among themselves
    are then not ImageNet's class indices."""
    present = set(names)
    return bool(present) and present <= _INDEX.keys() and len(present) < len(IMAGENET_WNIDS)
