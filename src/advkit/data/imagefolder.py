"""Image folders: your own images, or ImageNet's validation set, loaded as a :class:`Dataset`.

Two layouts are understood:

* **class folders**: ``ROOT/CLASS/**/*.png``. Class names are the sorted subfolder names (or ``classes``, which
  picks and orders them); images are searched recursively inside each class folder and taken in sorted path
  order.
* **flat images plus a labels file**: ``ROOT/*.JPEG`` (ImageNet's ``ILSVRC2012_val_00000001.JPEG`` ...) with a
  text file that holds, per line, either ``filename label`` (whitespace or comma separated; the filename may omit
  its extension, so ImageNet's ``LOC_val_solution.csv`` works as it is) or just ``label``, one per image in
  sorted-filename order. A label is an integer (0-based) or a class name (an ImageNet ``wnid``), mapped through
  ``classes`` when given; without ``classes`` the class list is ``0..max`` or the sorted names, over every label
  in the file (lines for absent images included, so a partial folder keeps the full file's indices). Pass
  ``classes`` (e.g. the sorted 1,000 wnids) whenever the indices must match a model's outputs. Without
  ``labels_file``, ``ROOT/labels.txt`` or ``ROOT/../NAME_labels.txt`` (``val_labels.txt`` next to ``val/``) is
  used when present. Blank lines, lines starting with ``#`` and a first line whose first field is a header word
  (``ImageId``, ``filename``, ``file``, ``image``, ``path``, ``name``) are skipped.

  ImageNet's devkit file ``ILSVRC2012_validation_ground_truth.txt`` is *not* in the order torchvision/timm models
  use: its labels are 1-based ILSVRC2012 ids. Convert it (to wnids, or to 0-based indices in sorted-wnid order)
  before use; it is never picked up automatically.

Images are decoded with Pillow (imported lazily), converted to RGB (grey images get three equal channels) and
stacked as ``uint8`` ``(N, 3, H, W)``. They must all have the same size unless ``size`` is given: then each is
resized so its shorter side is ``resize`` (default ``size``) and centre-cropped to ``size x size`` (ImageNet's
usual evaluation is ``resize=256, size=224``).

``advkit.data.load("imagefolder", split="val", data_dir=ROOT, size=224)`` reads ``ROOT/val`` when it exists;
when ``ROOT`` has none of the ``train``/``val``/``test`` subfolders, ``ROOT`` itself is the split. Without
``data_dir`` the folder is ``$ADVKIT_DATA/imagefolder`` or ``$XDG_CACHE_HOME/advkit/imagefolder``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advkit.data.errors import DataError, DataNotFoundError
from advkit.data.registry import Dataset, DatasetSpec, describe_selection, locate, register, subset_indices

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
SPLIT_FOLDERS = ("train", "val", "test")
# a labels file whose first line starts with one of these (any case) has a header line
_HEADER_WORDS = frozenset({"imageid", "filename", "file", "image", "path", "name"})
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()


def _subfolders(root: Path) -> list[Path]:
    return sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)


def _images_under(folder: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath, f) for f in sorted(filenames) if _is_image(Path(dirpath, f))]
    return out


def _class_folders(root: Path, classes: Sequence[str] | None) -> tuple[list[Path], list[int], tuple[str, ...]]:
    found = {d.name: d for d in _subfolders(root)}
    if classes is None:
        names = tuple(found)
    else:
        names = tuple(classes)
        missing = [c for c in names if c not in found]
        if missing:
            raise DataError(f"{root}: no folder for class(es) {', '.join(missing[:5])}"
                            f"{' ...' if len(missing) > 5 else ''}; the folders are {', '.join(list(found)[:10])}.")
        extra = sorted(set(found) - set(names))
        if extra:
            log.info("%s: ignoring %d folder(s) not in classes: %s", root, len(extra), ", ".join(extra[:5]))
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(names):
        imgs = _images_under(found[name])
        if not imgs:
            raise DataError(f"{found[name]}: class folder {name!r} holds no images "
                            f"({', '.join(sorted(IMAGE_EXTENSIONS))}); add some or remove the folder.")
        files += imgs
        labels += [label] * len(imgs)
    return files, labels, names


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
    return _parse_labels(tokens, path, classes, universe)


def _decode(path: Path, size: int | None, resize: int) -> np.ndarray:
    """One image as ``uint8`` ``(H, W, 3)``, resized and centre-cropped when ``size`` is given."""
    from PIL import Image

    try:
        with Image.open(path) as opened:
            im = opened.convert("RGB")  # decodes the pixels: a truncated or corrupt file fails here
        if size is not None:
            w, h = im.size
            scale = resize / min(w, h)
            nw, nh = max(resize, round(w * scale)), max(resize, round(h * scale))
            if (nw, nh) != (w, h):
                im = im.resize((nw, nh), Image.Resampling.BILINEAR)
            left, top = (nw - size) // 2, (nh - size) // 2
            im = im.crop((left, top, left + size, top + size))
        return np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot decode this image ({e}). Replace or delete the file.") from e


def _auto_labels_file(root: Path) -> Path | None:
    for p in (root / "labels.txt", root.parent / f"{root.name}_labels.txt"):
        if p.is_file():
            return p
    return None


def load_imagefolder(root: str | Path, size: int | None = None, limit: int | None = None,
                     labels_file: str | Path | None = None, classes: Sequence[str] | None = None, *,
                     resize: int | None = None, subset: str = "balanced", seed: int = 0,
                     split: str | None = None, name: str = "imagefolder") -> Dataset:
    """Load a folder of images (a folder per class, or flat images with a labels file) as a :class:`Dataset`.

    Args:
        root: the folder (see the module docstring for the layouts).
        size: when given, every image is resized (shorter side to ``resize``) and centre-cropped to
            ``size x size``; without it all images must already share one size.
        limit: keep at most this many images; only the kept ones are decoded.
        labels_file: the labels of a flat folder (forces the flat layout); found automatically as
            ``root/labels.txt`` or ``root/../NAME_labels.txt`` when ``root`` has no class subfolders.
        classes: class names in label order: which class folders to read and in what order, or the names of a
            labels file's integer labels / the map for its name labels.
        resize: the shorter side before the centre crop (default ``size``); must be at least ``size``.
        subset: ``"balanced"`` (per class, seeded), ``"random"`` (seeded) or ``"first"`` choice of the ``limit``
            images (see :func:`advkit.data.subset_indices`).
        seed: seed of the ``"balanced"`` / ``"random"`` choice.
        split: recorded in the dataset (default: the folder's name).
        name: recorded in the dataset.

    Returns:
        A :class:`Dataset` with ``uint8`` images ``(N, 3, H, W)``, int64 labels, ``.classes``, ``.files``.

    Raises:
        DataNotFoundError: ``root`` is not a folder.
        DataError: naming the file at fault: an empty folder or class folder, an unreadable image, images of
            different sizes without ``size``, or a labels file that does not fit the images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(f"{root}: no such folder. Point it at a folder of class folders or of images.")
    if size is not None and size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if resize is not None and (size is None or resize < size):
        raise ValueError(f"resize ({resize}) needs size= and must be at least size ({size})")
    shorter = resize or size or 0
    if labels_file is None and _subfolders(root):
        files, labels, names = _class_folders(root, classes)
        loose = [p.name for p in root.iterdir() if _is_image(p)]
        if loose:
            log.warning("%s: ignoring %d image(s) beside the class folders (e.g. %s)", root, len(loose), loose[0])
    else:
        files = sorted((p for p in root.iterdir() if _is_image(p)), key=lambda p: p.name)
        if not files:
            raise DataError(f"{root}: empty: no class subfolders and no images "
                            f"({', '.join(sorted(IMAGE_EXTENSIONS))}).")
        lf = Path(labels_file) if labels_file is not None else _auto_labels_file(root)
        if lf is None:
            raise DataError(f"{root}: {len(files)} images but no class subfolders and no labels file; pass "
                            f"labels_file= or write {root / 'labels.txt'} (one 'filename label' per line).")
        labels, names = read_labels_file(lf, files, classes)
    idx = subset_indices(len(files), limit, subset, seed, np.asarray(labels))
    chosen = [files[i] for i in idx]
    images: np.ndarray | None = None
    for row, path in enumerate(chosen):
        pixels = _decode(path, size, shorter)
        if images is None:
            images = np.empty((len(chosen), 3, *pixels.shape[:2]), dtype=np.uint8)
        elif pixels.shape[:2] != images.shape[2:]:
            raise DataError(f"{path}: {pixels.shape[1]}x{pixels.shape[0]} pixels but {chosen[0]} is "
                            f"{images.shape[3]}x{images.shape[2]}; pass size= to resize and centre-crop images of "
                            f"different sizes.")
        images[row] = pixels.transpose(2, 0, 1)
    if images is None:  # limit=0
        images = np.empty((0, 3, size or 0, size or 0), dtype=np.uint8)
    return Dataset(
        name=name, split=split or root.name, images=torch.from_numpy(images),
        y=torch.tensor([labels[i] for i in idx], dtype=torch.int64), classes=names, source=str(root),
        indices=torch.from_numpy(idx), files=tuple(str(p) for p in chosen),
        selection=describe_selection(len(files), limit, subset, seed),
    )


def resolve_split(root: Path, split: str) -> Path:
    """``root/split`` when it is a folder; ``root`` itself when it has no ``train``/``val``/``test`` folder.

    Raises:
        DataNotFoundError: ``root`` has split folders, but not ``split``.
    """
    sub = root / split
    if sub.is_dir():
        return sub
    present = [s for s in SPLIT_FOLDERS if (root / s).is_dir()]
    if present:
        raise DataNotFoundError(f"{root} has split folder(s) {', '.join(present)} but no {split!r}; pass split= "
                                f"one of them.")
    return root


def _load_registered(split: str, *, limit: int | None, subset: str, seed: int, data_dir: str | Path | None,
                     **options: Any) -> Dataset:
    """The ``imagefolder`` registry entry: find the root, pick the split folder, load it."""
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataNotFoundError(f"{data_dir}: no such folder (data_dir of the imagefolder dataset).")
    root = Path(data_dir) if data_dir is not None else locate("imagefolder", download_ok=False)
    return load_imagefolder(resolve_split(root, split), limit=limit, subset=subset, seed=seed, split=split,
                            **options)


IMAGEFOLDER = register(DatasetSpec(
    name="imagefolder",
    classes=(), shape=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD,
    loader=_load_registered,
    description="your own images: ROOT/[train|val|test/]CLASS/*.png, or flat images + labels file (ImageNet val);"
                " pass data_dir",
))
