"""MNIST from IDX files the user already has on disk (no download code).

The IDX format (LeCun et al., "THE MNIST DATABASE of handwritten digits"): a 4-byte magic number
``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the values in C order,
big-endian. Type codes: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
0x0E float64. Files may be gzipped (detected from the content, not the name).

``load_mnist(directory, "train" | "test")`` finds the standard file names
(``train-images-idx3-ubyte`` / ``train-images.idx3-ubyte``, with or without ``.gz``) and returns
an :class:`~rnnrbm.data.images.ImageSet` of 28×28 images scaled to [0, 1] (thresholded at 0.5 when
``binary``). Missing files raise ``FileNotFoundError`` and malformed ones ``DataFormatError``;
both messages name the path and the fix.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from rnnrbm.data.images import ImageSet
from rnnrbm.validation import DataFormatError, check_choice, error_message

__all__ = ["IDX_TYPES", "load_mnist", "mnist_paths", "read_idx"]

IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_PREFIX = {"train": "train", "test": "t10k"}
_FIX_MISSING = (
    "put the four MNIST IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, gzipped or not) in that folder, "
    "or pass the folder that holds them"
)


def _corrupt(path: Path, expected: str, got: str) -> DataFormatError:
    return DataFormatError(
        error_message(
            f"IDX file {path}",
            expected,
            got,
            "the file is truncated or not an IDX file; copy it again (gunzip -t checks .gz files)",
        )
    )


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(
            error_message(f"IDX file {path}", "an existing file", "no such file", _FIX_MISSING)
        )
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise _corrupt(path, "a complete gzip stream", f"a broken one ({exc})") from exc


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (raw or gzipped) into a native-endian numpy array of its shape."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise _corrupt(path, "a 4-byte IDX magic number", f"{len(data)} bytes")
    zero0, zero1, type_code, ndim = data[:4]
    if zero0 != 0 or zero1 != 0 or type_code not in IDX_TYPES or ndim == 0:
        raise _corrupt(
            path,
            "magic 0x00 0x00 <type in 08 09 0B 0C 0D 0E> <ndim ≥ 1>",
            "magic " + " ".join(f"{b:02X}" for b in data[:4]),
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _corrupt(path, f"{ndim} dimension sizes after the magic", "a shorter header")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise _corrupt(
            path,
            f"{expected} bytes of data for shape {shape} ({dtype.name})",
            f"{len(data) - header} bytes",
        )
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def mnist_paths(directory: str | os.PathLike[str], split: str = "train") -> tuple[Path, Path]:
    """``(images, labels)`` paths of ``split`` in ``directory`` under any standard name."""
    check_choice(split, "split", _PREFIX)
    folder = Path(directory)
    if not folder.is_dir():
        raise FileNotFoundError(
            error_message(f"MNIST folder {folder}", "an existing folder", "none", _FIX_MISSING)
        )
    found = []
    for kind, dims in (("images", 3), ("labels", 1)):
        stem = f"{_PREFIX[split]}-{kind}"
        names = [f"{stem}-idx{dims}-ubyte", f"{stem}.idx{dims}-ubyte"]
        candidates = [folder / (n + gz) for n in names for gz in ("", ".gz")]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            raise FileNotFoundError(
                error_message(
                    f"MNIST {split} {kind} in {folder}",
                    "one of " + ", ".join(c.name for c in candidates),
                    "none of them",
                    _FIX_MISSING,
                )
            )
        found.append(hit)
    return found[0], found[1]


def load_mnist(
    directory: str | os.PathLike[str],
    split: str = "train",
    *,
    binary: bool = True,
    threshold: float = 0.5,
    limit: int | None = None,
) -> ImageSet:
    """MNIST ``split`` from ``directory``: images ``(N, 784)`` float32 in [0, 1] (pixel / 255,
    then ``> threshold`` when ``binary``), labels ``(N,)`` int64, shape ``(28, 28)``. ``limit``
    keeps the first rows only."""
    image_path, label_path = mnist_paths(directory, split)
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataFormatError(
            error_message(
                f"MNIST images {image_path}",
                "a uint8 IDX array of shape (N, rows, cols)",
                f"{images.dtype} of shape {images.shape}",
                "pass the images file (…-images-idx3-ubyte)",
            )
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataFormatError(
            error_message(
                f"MNIST labels {label_path}",
                f"{images.shape[0]} labels (one per image in {image_path.name})",
                f"shape {labels.shape}",
                "use the labels file of the same split",
            )
        )
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    flat = images.reshape(images.shape[0], -1).astype(np.float32) / 255.0
    if binary:
        flat = (flat > threshold).astype(np.float32)
    return ImageSet(flat, labels.astype(np.int64), (int(images.shape[1]), int(images.shape[2])))
