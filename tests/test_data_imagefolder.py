"""Image folders: class-folder and flat (ImageNet val) layouts, labels files, resizing, and clear errors, on tiny
PNGs written with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import advkit.data as data
from advkit.data import DataError, DataNotFoundError, load_imagefolder

Image = pytest.importorskip("PIL.Image", reason="Pillow is needed to write and read the test images")

W, H = 5, 4


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADVKIT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def png(path: Path, value: int, size: tuple[int, int] = (W, H), mode: str = "RGB") -> np.ndarray:
    """Write an image whose pixel (c, i, j) is (value + 40c + 7i + 3j) % 256; return it as (3, H, W) uint8."""
    w, h = size
    c, i, j = np.ogrid[:3, :h, :w]
    arr = ((value + 40 * c + 7 * i + 3 * j) % 256).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "L":
        Image.fromarray(arr[0]).save(path)
        return np.broadcast_to(arr[:1], arr.shape).copy()
    Image.fromarray(arr.transpose(1, 2, 0)).save(path)
    return arr


def class_tree(root: Path) -> dict[str, np.ndarray]:
    """root/cat/{a,b}.png, root/dog/{a.png, sub/c.png}, root/emu/z.png (grey); returns pixels by relative path."""
    out = {}
    for k, rel in enumerate(["cat/a.png", "cat/b.png", "dog/a.png", "dog/sub/c.png"]):
        out[rel] = png(root / rel, 10 * k)
    out["emu/z.png"] = png(root / "emu" / "z.png", 99, mode="L")
    return out


def test_class_folders(tmp_path: Path) -> None:
    pixels = class_tree(tmp_path / "pets")
    (tmp_path / "pets" / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "pets" / ".hidden").mkdir()
    ds = load_imagefolder(tmp_path / "pets")
    assert ds.classes == ("cat", "dog", "emu")
    assert ds.y.tolist() == [0, 0, 1, 1, 2] and ds.y.dtype == torch.int64
    assert ds.images.shape == (5, 3, H, W) and ds.images.dtype == torch.uint8
    assert ds.files is not None
    assert [Path(f).relative_to(tmp_path / "pets").as_posix() for f in ds.files] == list(pixels)
    for row, arr in enumerate(pixels.values()):
        np.testing.assert_array_equal(ds.images[row].numpy(), arr)
    x = ds.x
    assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    torch.testing.assert_close(x[0], torch.from_numpy(pixels["cat/a.png"]).float() / 255)
    assert ds.split == "pets" and ds.name == "imagefolder"


def test_classes_pick_and_order(tmp_path: Path) -> None:
    class_tree(tmp_path / "pets")
    ds = load_imagefolder(tmp_path / "pets", classes=["dog", "cat"])
    assert ds.classes == ("dog", "cat") and ds.y.tolist() == [0, 0, 1, 1]
    with pytest.raises(DataError, match="no folder for class.*owl"):
        load_imagefolder(tmp_path / "pets", classes=["cat", "owl"])


def test_limit_decodes_only_kept_images(tmp_path: Path) -> None:
    class_tree(tmp_path / "pets")
    (tmp_path / "pets" / "emu" / "zz.png").write_bytes(b"not a png")  # never decoded with limit=3
    ds = load_imagefolder(tmp_path / "pets", limit=3, subset="first")
    assert len(ds) == 3 and ds.indices is not None and ds.indices.tolist() == [0, 1, 2]
    assert ds.selection == "the first 3"
    (tmp_path / "pets" / "emu" / "zz.png").unlink()
    balanced = load_imagefolder(tmp_path / "pets", limit=3)  # the default: one image of each class
    assert sorted(set(balanced.y.tolist())) == sorted(set(load_imagefolder(tmp_path / "pets").y.tolist()))[:3]
    assert balanced.selection == "3 class-balanced (seed 0)"
    a = load_imagefolder(tmp_path / "pets", limit=2, subset="random", seed=1)
    b = load_imagefolder(tmp_path / "pets", limit=2, subset="random", seed=1)
    assert a.files == b.files and torch.equal(a.images, b.images)
    assert load_imagefolder(tmp_path / "pets", limit=0).images.shape[0] == 0


def test_corrupt_and_truncated_images(tmp_path: Path) -> None:
    class_tree(tmp_path / "pets")
    bad = tmp_path / "pets" / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="cannot decode this image") as e:
        load_imagefolder(tmp_path / "pets")
    assert str(bad) in str(e.value)
    good = (tmp_path / "pets" / "cat" / "a.png").read_bytes()
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="broken.png"):
        load_imagefolder(tmp_path / "pets")


def test_mismatched_sizes_need_size(tmp_path: Path) -> None:
    png(tmp_path / "f" / "a" / "1.png", 0)
    odd = tmp_path / "f" / "b" / "2.png"
    png(odd, 0, size=(8, 6))
    with pytest.raises(DataError, match="pass size=") as e:
        load_imagefolder(tmp_path / "f")
    assert str(odd) in str(e.value) and "8x6" in str(e.value)
    ds = load_imagefolder(tmp_path / "f", size=3)
    assert ds.images.shape == (2, 3, 3, 3)


def test_resize_shorter_side_then_centre_crop(tmp_path: Path) -> None:
    arr = png(tmp_path / "f" / "a" / "wide.png", 0, size=(8, 4))
    ds = load_imagefolder(tmp_path / "f", size=4)  # shorter side already 4: a pure centre crop of columns 2..5
    np.testing.assert_array_equal(ds.images[0].numpy(), arr[:, :, 2:6])
    ds = load_imagefolder(tmp_path / "f", size=2, resize=4)
    np.testing.assert_array_equal(ds.images[0].numpy(), arr[:, 1:3, 3:5])
    half = load_imagefolder(tmp_path / "f", size=2)  # 8x4 -> 4x2, then the middle 2x2
    assert half.images.shape == (1, 3, 2, 2)
    with pytest.raises(ValueError, match="resize"):
        load_imagefolder(tmp_path / "f", size=4, resize=3)


def test_empty_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no class subfolders and no images") as e:
        load_imagefolder(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(e.value)
    png(tmp_path / "f" / "a" / "1.png", 0)
    (tmp_path / "f" / "b" / "deeper").mkdir(parents=True)
    with pytest.raises(DataError, match="class folder 'b' holds no images") as e:
        load_imagefolder(tmp_path / "f")
    assert str(tmp_path / "f" / "b") in str(e.value)
    with pytest.raises(DataNotFoundError, match="no such folder"):
        load_imagefolder(tmp_path / "nowhere")


# ---- flat folder + labels file (ImageNet val) -------------------------------------------------------------------


def flat(root: Path, n: int = 4) -> list[np.ndarray]:
    """ILSVRC-style names, written out of order."""
    return [png(root / f"ILSVRC2012_val_{k:08d}.JPEG.png", 20 * k) for k in (3, 1, 4, 2)[:n]]


def test_flat_with_filename_labels(tmp_path: Path) -> None:
    flat(tmp_path / "val")
    lf = tmp_path / "val_labels.txt"
    lf.write_text("# filename label\nILSVRC2012_val_00000004.JPEG.png 2\nILSVRC2012_val_00000001.JPEG.png 0\n\n"
                  "ILSVRC2012_val_00000002.JPEG.png,7\nILSVRC2012_val_00000003.JPEG 5\n"
                  "ILSVRC2012_val_00000099.JPEG 1\n")  # a stem is enough; extra lines for absent files are fine
    ds = load_imagefolder(tmp_path / "val", labels_file=lf)
    assert ds.files is not None and [Path(f).name[21:23] for f in ds.files] == ["01", "02", "03", "04"]
    assert ds.y.tolist() == [0, 7, 5, 2] and ds.classes == tuple(str(i) for i in range(8))
    assert ds.images[0, 0, 0, 0] == 20  # ..._00000001 was written with value 20
    # picked up automatically as val_labels.txt beside val/, and with class names
    assert load_imagefolder(tmp_path / "val").y.tolist() == [0, 7, 5, 2]
    named = load_imagefolder(tmp_path / "val", labels_file=lf, classes=[f"c{i}" for i in range(10)])
    assert named.classes[7] == "c7" and len(named.classes) == 10


def test_flat_with_bare_labels_and_wnids(tmp_path: Path) -> None:
    flat(tmp_path / "val")
    (tmp_path / "val" / "labels.txt").write_text("n02\nn01\nn02\nn03\n")  # sorted-filename order
    ds = load_imagefolder(tmp_path / "val")
    assert ds.classes == ("n01", "n02", "n03") and ds.y.tolist() == [1, 0, 1, 2]
    ds = load_imagefolder(tmp_path / "val", classes=["n03", "n02", "n01"])
    assert ds.y.tolist() == [1, 2, 1, 0]
    with pytest.raises(DataError, match="class 'n03' is not among the 2 classes"):
        load_imagefolder(tmp_path / "val", classes=["n01", "n02"])


def test_loc_csv_with_header_and_partial_folder(tmp_path: Path) -> None:
    """ImageNet's LOC_val_solution.csv as it is: a header, wnid + boxes, and lines for images not in the folder."""
    flat(tmp_path / "val", n=2)  # only ..._00000003 and ..._00000001
    lf = tmp_path / "LOC_val_solution.csv"
    lf.write_text("ImageId,PredictionString\n"
                  "ILSVRC2012_val_00000001.JPEG,n01751748 1 2 3 4 n01751748 5 6 7 8\n"
                  "ILSVRC2012_val_00000002.JPEG,n01440764 1 2 3 4\n"
                  "ILSVRC2012_val_00000003.JPEG,n09999999 1 2 3 4\n")
    ds = load_imagefolder(tmp_path / "val", labels_file=lf)
    assert ds.classes == ("n01440764", "n01751748", "n09999999")  # from the whole file, not the 2 images
    assert ds.y.tolist() == [1, 2]


def test_labels_file_errors(tmp_path: Path) -> None:
    flat(tmp_path / "val")
    lf = tmp_path / "labels.txt"
    cases = {
        "1\n2\n3\n": "3 labels but 4 images",
        "1\n2\n3\n4\n5\n": "5 labels but 4 images",
        "ILSVRC2012_val_00000001.JPEG.png 1\n2\n3\n4\n": "line 2: mixes 'filename label' lines with bare",
        "ILSVRC2012_val_00000001.JPEG.png 1\nILSVRC2012_val_00000002.JPEG.png 1\n": "no label for 2 image",
        "1\n2\ncat\n4\n": "line 3: label 'cat' mixes",
        "1\n-2\n3\n4\n": "line 2: negative label",
        "": "holds no labels",
    }
    for text, message in cases.items():
        lf.write_text(text)
        with pytest.raises(DataError, match=message) as e:
            load_imagefolder(tmp_path / "val", labels_file=lf)
        assert str(lf) in str(e.value), text
    lf.write_text("0\n1\n2\n9\n")
    with pytest.raises(DataError, match="line 4: label 9 out of range for 3 classes"):
        load_imagefolder(tmp_path / "val", labels_file=lf, classes=["a", "b", "c"])
    lf.write_text("a.png 1\nb.png 2\na.png 3\n")
    with pytest.raises(DataError, match="line 3: a.png already labelled on line 1"):
        load_imagefolder(tmp_path / "val", labels_file=lf)


def test_flat_without_labels(tmp_path: Path) -> None:
    flat(tmp_path / "val")
    with pytest.raises(DataError, match="4 images but no class subfolders and no labels file"):
        load_imagefolder(tmp_path / "val")


# ---- through the registry: load("imagefolder", ...) ------------------------------------------------------------


def test_load_registered_splits(tmp_path: Path) -> None:
    class_tree(tmp_path / "root" / "train")
    png(tmp_path / "root" / "val" / "cat" / "v.png", 1)
    png(tmp_path / "root" / "val" / "dog" / "v.png", 2)
    val = data.load("imagefolder", split="val", data_dir=tmp_path / "root")
    assert val.split == "val" and val.classes == ("cat", "dog") and val.y.tolist() == [0, 1]
    assert val.source == str(tmp_path / "root" / "val")
    train = data.load("imagefolder", split="train", data_dir=tmp_path / "root", limit=2, size=2)
    assert train.images.shape == (2, 3, 2, 2)
    with pytest.raises(DataNotFoundError, match="has split folder.*train, val but no 'test'"):
        data.load("imagefolder", data_dir=tmp_path / "root")
    with pytest.raises(TypeError):
        data.load("imagefolder", split="val", data_dir=tmp_path / "root", colour="blue")


def test_load_registered_root_is_the_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class_tree(tmp_path / "pets")
    ds = data.load("imagefolder", split="test", data_dir=tmp_path / "pets")
    assert len(ds) == 5 and ds.split == "test" and ds.classes == ("cat", "dog", "emu")
    with pytest.raises(DataNotFoundError, match="no such folder"):
        data.load("imagefolder", data_dir=tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError, match="(?s)no folder for imagefolder.*ADVKIT_DATA"):
        data.load("imagefolder")
    monkeypatch.setenv("ADVKIT_DATA", str(tmp_path))
    (tmp_path / "imagefolder").symlink_to(tmp_path / "pets")
    assert len(data.load("imagefolder", limit=2)) == 2
    assert data.info("imagefolder").found == tmp_path / "imagefolder"
