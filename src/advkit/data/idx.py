"""Reader for the IDX format of LeCun's MNIST and Zalando's Fashion-MNIST files (optionally gzip-compressed).

An IDX file starts with a 4-byte magic number ``0x0000TTDD`` (``TT`` the element type, ``0x08`` for unsigned
bytes; ``DD`` the number of dimensions), then one big-endian uint32 per dimension, then the data.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from advkit.data.errors import DataError

_UBYTE = 0x08


def read_idx(path: str | Path, expect_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes into a numpy array.

    Args:
        path: the file; one that starts with the gzip header is decompressed first (whatever its suffix, so a
            ``.gz`` file that was decompressed in place still reads).
        expect_ndim: 3 for images ``(N, H, W)``, 1 for labels ``(N,)``; checked against the header.

    Returns:
        ``uint8`` array with the shape from the header.

    Raises:
        DataError: naming the file, for a corrupt or truncated gzip stream, a wrong magic number, a
            dimension count other than ``expect_ndim`` or a payload shorter or longer than the header says.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(
                f"{path}: the gzip stream is corrupt or truncated ({e}). Delete the file and fetch it again "
                f"(`advkit data fetch`)."
            ) from e
    if len(raw) < 4:
        raise DataError(f"{path}: only {len(raw)} bytes, too short for an IDX header. Fetch the file again.")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != _UBYTE:
        raise DataError(
            f"{path}: wrong IDX magic number 0x{raw[:4].hex()} (expected 0x000008{(expect_ndim or 1):02x} for "
            f"unsigned bytes). This is not an MNIST-style IDX file; check you pointed at the right file."
        )
    if expect_ndim is not None and ndim != expect_ndim:
        kind = "images" if expect_ndim == 3 else "labels"
        raise DataError(
            f"{path}: IDX header says {ndim} dimension(s) but {kind} need {expect_ndim} "
            f"(magic 0x{raw[:4].hex()}). Are the image and label files swapped?"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes). Fetch the file again.")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape, dtype=np.int64))
    got = len(raw) - header
    if got != expected:
        raise DataError(
            f"{path}: header promises {expected} bytes of data for shape {tuple(shape)} but the file has {got}"
            f" ({'truncated' if got < expected else 'trailing bytes'}). Fetch the file again."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()
