"""Labels files of flat image folders (ImageNet's validation layout): ``filename label`` lines or bare labels.

A file holds, per line, either ``filename label`` (whitespace or comma separated; the filename may omit its
extension, so ImageNet's ``LOC_val_solution.csv`` works as it is: only its first word after the file name, the
WordNet id, is read) or just ``label``, one per image in sorted-filename order. A label is an integer (0-based)
or a class name (an ImageNet WordNet id), mapped through ``classes`` when given. Blank lines, lines starting with
``#`` and a first line whose first field is a header word (``ImageId``, ``filename``, ``file``, ``image``,
``path``, ``name``) are skipped. ImageNet's devkit ``ILSVRC2012_validation_ground_truth.txt`` (1-based ILSVRC2012
ids, in another order) is refused.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

from advkit.data.errors import DataError
from advkit.data.imagenet import looks_like_imagenet_subset

log = logging.getLogger(__name__)

__all__ = ["read_labels_file", "some", "warn_positional"]

# a labels file whose first line starts with one of these (any case) has a header line
_HEADER_WORDS = frozenset({"imageid", "filename", "file", "image", "path", "name"})


def some(names: Sequence[str], k: int = 5) -> str:
    """The first ``k`` names, comma-separated, and how many there are in all when there are more."""
    return ", ".join(names[:k]) + (f" ... ({len(names)} in all)" if len(names) > k else "")


def warn_positional(names: Sequence[str], what: str) -> None:
    """Warn when ``names`` are some of ImageNet's WordNet ids but label by their position among themselves."""
    if looks_like_imagenet_subset(names):
        log.warning("%s are %d ImageNet WordNet ids, labelled by their position among themselves (0..%d), not by "
                    "ImageNet's class index; for a 1000-class ImageNet model load the dataset 'imagenet' (or pass "
                    "classes=advkit.data.IMAGENET_WNIDS)", what, len(names), len(names) - 1)


def _parse_labels(tokens: list[tuple[int, str]], path: Path, classes: Sequence[str] | None,
                  universe: list[tuple[int, str]]) -> tuple[list[int], tuple[str, ...]]:
    """Turn the images' label tokens (with their line numbers) into indices: all integers, or all class names.

    ``universe`` is every label in the file: it decides the kind and, without ``classes``, the class list, so
    the indices of a partial folder do not depend on which images it holds.
    """
    is_int = [re.fullmatch(r"[+-]?\d+", t) is not None for _, t in universe]
    if all(is_int):
        bad = next(((ln, t) for ln, t in universe if int(t) < 0), None)
        if bad is not None:
            raise DataError(f"{path}, line {bad[0]}: negative label {bad[1]}; labels are 0-based class indices.")
        top = max(int(t) for _, t in universe)
        names = tuple(classes) if classes is not None else tuple(str(i) for i in range(top + 1))
        over = next(((ln, t) for ln, t in tokens if int(t) >= len(names)), None)
        if over is not None:
            raise DataError(f"{path}, line {over[0]}: label {over[1]} out of range for {len(names)} classes. "
                            f"Labels are 0-based.")
        return [int(t) for _, t in tokens], names
    if any(is_int):
        ln, t = universe[is_int.index(not is_int[0])]
        raise DataError(f"{path}, line {ln}: label {t!r} mixes with labels of the other kind (integers and class "
                        f"names); use one kind throughout.")
    names = tuple(classes) if classes is not None else tuple(sorted({t for _, t in universe}))
    index = {n: i for i, n in enumerate(names)}
    unknown = next(((ln, t) for ln, t in tokens if t not in index), None)
    if unknown is not None:
        raise DataError(f"{path}, line {unknown[0]}: class {unknown[1]!r} is not among the {len(names)} classes "
                        f"given.")
    return [index[t] for _, t in tokens], names


def read_labels_file(path: str | Path, images: Sequence[Path],
                     classes: Sequence[str] | None = None) -> tuple[list[int], tuple[str, ...]]:
    """Labels of ``images`` (sorted by name) from a labels file (see the module docstring for its formats).

    Args:
        path: the labels file.
        images: the image files, in the order the labels are wanted (sorted filenames).
        classes: class names in label order; decides the class count and maps name labels.

    Returns:
        ``(labels, classes)``, one label per image.

    Raises:
        DataError: naming the labels file (and line): unreadable, mixed formats, a label count that does not
            match the images, an image without a label, a duplicate filename, a label out of range.
    """
    path = Path(path)
    if path.name.startswith("ILSVRC2012_validation_ground_truth"):
        raise DataError(f"{path}: ImageNet's devkit ground truth holds 1-based ILSVRC2012 ids, not the class indices "
                        f"torchvision / timm models use; use LOC_val_solution.csv or a 'filename wnid' file instead.")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the labels file ({e}).") from e
    rows = [(ln, re.split(r"[\s,]+", s)) for ln, line in enumerate(text.splitlines(), 1)
            if (s := line.strip()) and not s.startswith("#")]
    if rows and rows[0][1][0].lower() in _HEADER_WORDS:
        rows = rows[1:]
    if not rows:
        raise DataError(f"{path}: the labels file holds no labels.")
    paired = [len(fields) >= 2 for _, fields in rows]
    if all(paired):
        universe = [(ln, fields[1]) for ln, fields in rows]
        by_name: dict[str, tuple[int, str]] = {}
        for ln, fields in rows:
            key = Path(fields[0]).name
            if key in by_name:
                raise DataError(f"{path}, line {ln}: {key} already labelled on line {by_name[key][0]}.")
            by_name[key] = (ln, fields[1])
        tokens: list[tuple[int, str]] = []
        unlabelled: list[str] = []
        for img in images:
            hit = by_name.get(img.name) or by_name.get(img.stem)
            if hit is None:
                unlabelled.append(img.name)
            else:
                tokens.append(hit)
        if unlabelled:
            raise DataError(f"{path}: no label for {len(unlabelled)} image(s), e.g. {', '.join(unlabelled[:3])}. "
                            f"Every image needs a 'filename label' line.")
    elif not any(paired):
        if len(rows) != len(images):
            raise DataError(f"{path}: {len(rows)} labels but {len(images)} images; a file of bare labels needs "
                            f"exactly one line per image, in sorted-filename order.")
        tokens = [(ln, fields[0]) for ln, fields in rows]
        universe = tokens
    else:
        ln = rows[paired.index(not paired[0])][0]
        raise DataError(f"{path}, line {ln}: mixes 'filename label' lines with bare 'label' lines; use one form "
                        f"throughout.")
    labels, names = _parse_labels(tokens, path, classes, universe)
    if classes is None:
        warn_positional(names, f"{path}: the labels")
    return labels, names
