"""Image folders: your own images, or ImageNet (any part of it), loaded as a :class:`Dataset`.

Two layouts are understood:

* **class folders**: ``ROOT/CLASS/**/*.png``. Class names are the sorted subfolder names, or ``classes``: then a
  label is the class's index in ``classes``; folders for only some of them are fine (their labels keep the full
  list's indices), folders outside it are skipped, but both at once (a misnamed folder?) are an error. Images are
  searched recursively inside each class folder and taken in sorted path order.
* **flat images plus a labels file**: ``ROOT/*.JPEG`` (ImageNet's ``ILSVRC2012_val_00000001.JPEG`` ...) with a
  labels file (formats in :mod:`advkit.data.labels`: ``filename label`` lines, e.g. ``filename wnid`` or
  ImageNet's ``LOC_val_solution.csv``, or bare labels in sorted-filename order). Without ``classes`` the class
  list is ``0..max`` or the sorted names, over every label in the file (lines for absent images included, so a
  partial folder keeps the full file's indices). Without ``labels_file``, ``ROOT/labels.txt``,
  ``ROOT/../NAME_labels.txt`` (``val_labels.txt`` next to ``val/``) or, for ``val/``, ``ROOT/../LOC_val_solution.csv``
  is used when present.

**ImageNet.** ``load("imagenet", ...)`` reads the same layouts with ``classes`` fixed to ImageNet's 1,000 sorted
WordNet ids (:data:`advkit.data.IMAGENET_WNIDS`), so class folders ``ROOT/val/n01440764/`` ... or a
``filename wnid`` file get the class indices torchvision's and timm's models use, however few classes the folder
holds; integer labels are taken as those indices (0-based). It crops to 224 px after resizing to 256 unless
``size`` / ``resize`` are given. ``imagefolder`` labels WordNet-id folders by their position among the folders
present (what a model trained on that folder with torchvision's ``ImageFolder`` expects) and warns that this is
not ImageNet's index.

Images are decoded with Pillow (imported lazily), converted to RGB (grey images get three equal channels) and
stacked as ``uint8`` ``(N, 3, H, W)``. They must all have the same size unless ``size`` is given: then each is
resized so its shorter side is ``resize`` (default ``size``) and centre-cropped to ``size x size`` (ImageNet's
usual evaluation is ``resize=256, size=224``).

``advkit.data.load("imagefolder", split="val", data_dir=ROOT, size=224)`` reads ``ROOT/val`` when it exists;
when ``ROOT`` has none of the ``train``/``val``/``test`` subfolders, ``ROOT`` itself is the split. Without
``data_dir`` the folder is ``$ADVKIT_DATA/NAME`` or ``$XDG_CACHE_HOME/advkit/NAME`` (``NAME``: ``imagefolder``
or ``imagenet``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advkit.data.errors import DataError, DataNotFoundError
from advkit.data.imagenet import IMAGENET_WNIDS
from advkit.data.labels import read_labels_file, some, warn_positional
from advkit.data.registry import Dataset, DatasetSpec, describe_selection, locate, register, subset_indices

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
SPLIT_FOLDERS = ("train", "val", "test")
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
    """Images and labels of class folders; a label is the class's index in ``classes`` (default: the sorted
    folder names), so folders for only some of ``classes`` keep the indices of the full list."""
    found = {d.name: d for d in _subfolders(root)}
    if classes is None:
        names = tuple(found)
        warn_positional(names, f"{root}: the class folders")
    else:
        names = tuple(classes)
        missing = [c for c in names if c not in found]
        extra = sorted(set(found) - set(names))
        if len(missing) == len(names):
            raise DataError(f"{root}: no folder for any of the {len(names)} classes given ({some(names)}); the "
                            f"folders are {some(list(found))}. Name the folders after the classes.")
        if missing and extra:  # a class list for a part of the folders, and folders outside it: a misnamed folder?
            raise DataError(f"{root}: no folder for class(es) {some(missing)}, and folder(s) {some(extra)} are "
                            f"not among the classes given. Rename or remove those folders, or add them to classes.")
        if missing:
            log.info("%s: folders for %d of the %d classes; labels are indices among all %d", root,
                     len(names) - len(missing), len(names), len(names))
        if extra:
            log.info("%s: ignoring %d folder(s) not in classes: %s", root, len(extra), ", ".join(extra[:5]))
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(names):
        if name not in found:
            continue
        imgs = _images_under(found[name])
        if not imgs:
            raise DataError(f"{found[name]}: class folder {name!r} holds no images "
                            f"({', '.join(sorted(IMAGE_EXTENSIONS))}); add some or remove the folder.")
        files += imgs
        labels += [label] * len(imgs)
    return files, labels, names


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
    candidates = [root / "labels.txt", root.parent / f"{root.name}_labels.txt"]
    if root.name == "val":
        candidates.append(root.parent / "LOC_val_solution.csv")
    for p in candidates:
        if p.is_file():
            return p
    return None


def index_folder(root: str | Path, labels_file: str | Path | None = None,
                 classes: Sequence[str] | None = None) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """The image files of a folder and their labels, without decoding any image.

    Args:
        root: the folder (see the module docstring for the layouts).
        labels_file: the labels of a flat folder (forces the flat layout); found automatically as
            ``root/labels.txt``, ``root/../NAME_labels.txt`` or, for ``val/``, ``root/../LOC_val_solution.csv``.
        classes: class names in label order (see :func:`load_imagefolder`).

    Returns:
        ``(files, labels, classes)``: the files in load order, one label per file, the class names by label.

    Raises:
        DataNotFoundError: ``root`` is not a folder.
        DataError: an empty folder or class folder, or labels that do not fit the images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(f"{root}: no such folder. Point it at a folder of class folders or of images.")
    if labels_file is None and _subfolders(root):
        files, labels, names = _class_folders(root, classes)
        loose = [p.name for p in root.iterdir() if _is_image(p)]
        if loose:
            log.warning("%s: ignoring %d image(s) beside the class folders (e.g. %s)", root, len(loose), loose[0])
        return files, labels, names
    files = sorted((p for p in root.iterdir() if _is_image(p)), key=lambda p: p.name)
    if not files:
        raise DataError(f"{root}: empty: no class subfolders and no images "
                        f"({', '.join(sorted(IMAGE_EXTENSIONS))}).")
    lf = Path(labels_file) if labels_file is not None else _auto_labels_file(root)
    if lf is None:
        raise DataError(f"{root}: {len(files)} images but no class subfolders and no labels file; pass "
                        f"labels_file= or write {root / 'labels.txt'} (one 'filename label' per line).")
    labels, names = read_labels_file(lf, files, classes)
    return files, labels, names


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
        labels_file: the labels of a flat folder (forces the flat layout); found automatically when ``root``
            has no class subfolders (see :func:`index_folder`).
        classes: class names in label order: the class folders' labels (folders for only some of them are
            fine), or the names of a labels file's integer labels / the map for its name labels. Pass
            :data:`advkit.data.IMAGENET_WNIDS` (or load ``"imagenet"``) for ImageNet's class index.
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
    if size is not None and size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if resize is not None and (size is None or resize < size):
        raise ValueError(f"resize ({resize}) needs size= and must be at least size ({size})")
    shorter = resize or size or 0
    files, labels, names = index_folder(root, labels_file, classes)
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


def split_folder(name: str, split: str, data_dir: str | Path | None) -> Path:
    """The folder that a loader dataset ``name`` (``imagefolder``, ``imagenet``) reads ``split`` from.

    Raises:
        DataNotFoundError: ``data_dir`` is not a folder, no folder was found, or ``split`` is not in it.
    """
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataNotFoundError(f"{data_dir}: no such folder (data_dir of the {name} dataset).")
    root = Path(data_dir) if data_dir is not None else locate(name, download_ok=False)
    return resolve_split(root, split)


def _load_registered(split: str, *, limit: int | None, subset: str, seed: int, data_dir: str | Path | None,
                     **options: Any) -> Dataset:
    """The ``imagefolder`` registry entry: find the root, pick the split folder, load it."""
    return load_imagefolder(split_folder("imagefolder", split, data_dir), limit=limit, subset=subset, seed=seed,
                            split=split, **options)


def _load_imagenet(split: str, *, limit: int | None, subset: str, seed: int, data_dir: str | Path | None,
                   **options: Any) -> Dataset:
    """The ``imagenet`` registry entry: as ``imagefolder``, with ImageNet's class index and its usual crop."""
    if "classes" in options:
        raise ValueError("imagenet: the classes are ImageNet's 1,000 WordNet ids (advkit.data.IMAGENET_WNIDS) and "
                         "cannot be changed; load the dataset 'imagefolder' with classes= to choose your own")
    if "size" not in options and "resize" not in options:
        options.update(size=224, resize=256)
    return load_imagefolder(split_folder("imagenet", split, data_dir), limit=limit, subset=subset, seed=seed,
                            split=split, classes=IMAGENET_WNIDS, name="imagenet", **options)


IMAGEFOLDER = register(DatasetSpec(
    name="imagefolder",
    classes=(), shape=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD,
    loader=_load_registered,
    description="your own images: ROOT/[train|val|test/]CLASS/*.png, or flat images + labels file; pass data_dir",
))

IMAGENET = register(DatasetSpec(
    name="imagenet",
    classes=IMAGENET_WNIDS, shape=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD,
    loader=_load_imagenet,
    description="ImageNet-1k (any part of it): ROOT/val/WNID/*.JPEG, or flat images + a 'filename wnid' labels "
                "file; ImageNet's class index; pass data_dir",
))
