"""MNIST IDX loader: round trips through hand-written IDX bytes (raw and gzipped), every dtype,
standard file names, and errors that name the path and the fix."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from rnnrbm.data.mnist import load_mnist, mnist_paths, read_idx
from rnnrbm.validation import DataFormatError, InputError

IDX_CODES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@pytest.mark.parametrize("dtype", list(IDX_CODES))
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips_every_type(idx, tmp_path: Path, dtype: type, gz: bool) -> None:
    rng = np.random.default_rng(0)
    arr = (rng.normal(size=(3, 4, 5)) * 50).astype(dtype)
    got = read_idx(idx.write(tmp_path / "x.idx", arr, gz=gz))
    assert got.shape == (3, 4, 5) and got.dtype == np.dtype(dtype)
    assert got.dtype.isnative
    np.testing.assert_array_equal(got, arr)


@pytest.mark.parametrize(("gz", "dotted"), [(True, False), (False, True)])
def test_load_mnist_scales_binarises_and_limits(
    idx, tmp_path: Path, gz: bool, dotted: bool
) -> None:
    images = idx.make_mnist(tmp_path, gz=gz, dotted=dotted)
    grey = load_mnist(tmp_path, "test", binary=False)
    assert grey.shape == (28, 28) and grey.images.shape == (7, 784)
    assert grey.images.dtype == np.float32 and grey.labels.dtype == np.int64
    np.testing.assert_allclose(grey.images, images.reshape(7, -1) / 255.0, rtol=1e-6)
    binary = load_mnist(tmp_path, "train", limit=3)
    assert binary.images.shape == (3, 784)
    np.testing.assert_array_equal(binary.images, (images[:3].reshape(3, -1) / 255.0 > 0.5))


def test_missing_folder_and_files_name_the_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"MNIST folder .*nowhere.*Fix: put the four"):
        load_mnist(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte\.gz.*Fix: put the four"):
        mnist_paths(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match=r"IDX file .*absent\.idx.*no such file"):
        read_idx(tmp_path / "absent.idx")
    with pytest.raises(InputError, match="split: expected 'train' or 'test'"):
        mnist_paths(tmp_path, "valid")


def test_corrupt_files_are_reported_with_the_path(idx, tmp_path: Path) -> None:
    good = idx.encode(np.zeros((2, 3), np.uint8), 0x08)
    cases = {
        "short.idx": (good[:3], "4-byte IDX magic"),
        "magic.idx": (b"\x01\x02\x08\x01" + good[4:], "magic 01 02 08 01"),
        "type.idx": (b"\x00\x00\x07\x02" + good[4:], "magic 00 00 07 02"),
        "header.idx": (good[:6], "2 dimension sizes"),
        "truncated.idx": (good[:-1], r"6 bytes of data for shape \(2, 3\).*got 5 bytes"),
        "extra.idx": (good + b"\x00", "got 7 bytes"),
        "badgz.idx": (gzip.compress(good)[:-6], "a complete gzip stream"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(DataFormatError, match=message) as info:
            read_idx(path)
        assert name in str(info.value) and "Fix:" in str(info.value)


def test_images_and_labels_must_agree(idx, tmp_path: Path) -> None:
    idx.make_mnist(tmp_path, gz=False)
    idx.write(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, np.uint8))
    with pytest.raises(DataFormatError, match="expected 7 labels"):
        load_mnist(tmp_path, "train")
    idx.write(tmp_path / "t10k-images-idx3-ubyte", np.zeros((7, 784), np.uint8))
    with pytest.raises(DataFormatError, match=r"shape \(N, rows, cols\)"):
        load_mnist(tmp_path, "test")
