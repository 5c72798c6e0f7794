"""Small binary image sets for RBM demos and benchmarks.

The bundled set is the 1,797 8×8 handwritten digits of the UCI "Optical Recognition of
Handwritten Digits" data (Alpaydin & Kaynak 1998, CC BY 4.0; the copy scikit-learn ships), stored
as 17 grey levels in ``bundled/digits_8x8.npz`` and loaded without pickle.
"""

from __future__ import annotations

from importlib import resources
from typing import NamedTuple

import numpy as np

__all__ = ["ImageSet", "load_digits", "upsample_binary"]


class ImageSet(NamedTuple):
    """``images (N, H·W)`` float32 in {0, 1} (or [0, 1] grey), ``labels (N,)``, ``shape (H, W)``."""

    images: np.ndarray
    labels: np.ndarray
    shape: tuple[int, int]


def load_digits(*, binary: bool = True, threshold: float = 0.5) -> ImageSet:
    """The bundled 8×8 digits, scaled to [0, 1] and thresholded at ``threshold`` if ``binary``."""
    with resources.files("rnnrbm.data").joinpath("bundled/digits_8x8.npz").open("rb") as fh:
        with np.load(fh, allow_pickle=False) as npz:
            images = npz["images"].astype(np.float32) / 16.0
            labels = npz["labels"].astype(np.int64)
    flat = images.reshape(len(images), -1)
    if binary:
        flat = (flat > threshold).astype(np.float32)
    return ImageSet(flat, labels, (8, 8))


def upsample_binary(
    images: ImageSet, size: int, *, n: int | None = None, seed: int = 0, max_shift: int = 2
) -> ImageSet:
    """Grey digits resized to ``size × size`` (bilinear), randomly shifted by ≤ ``max_shift``
    pixels and thresholded at 0.5: a larger MNIST-sized binary set for benchmarks.

    ``n`` rows are drawn with replacement (seeded); shifts make the repeats distinct.
    """
    rng = np.random.default_rng(seed)
    h, w = images.shape
    grey = images.images.reshape(-1, h, w)
    idx = rng.integers(0, len(grey), n) if n is not None else np.arange(len(grey))
    # Bilinear interpolation on a pixel-centre grid, vectorised over all images.
    coords = (np.arange(size) + 0.5) * h / size - 0.5
    lo = np.clip(np.floor(coords).astype(int), 0, h - 1)
    hi = np.clip(lo + 1, 0, h - 1)
    frac = np.clip(coords - lo, 0.0, 1.0).astype(np.float32)
    src = grey[idx]
    rows = src[:, lo, :] * (1 - frac)[None, :, None] + src[:, hi, :] * frac[None, :, None]
    out = rows[:, :, lo] * (1 - frac)[None, None, :] + rows[:, :, hi] * frac[None, None, :]
    if max_shift:
        shifts = rng.integers(-max_shift, max_shift + 1, size=(len(out), 2))
        for s in np.unique(shifts, axis=0):
            sel = np.all(shifts == s, axis=1)
            out[sel] = np.roll(out[sel], tuple(s), axis=(1, 2))
    binary = (out > 0.5).astype(np.float32).reshape(len(out), -1)
    return ImageSet(binary, images.labels[idx], (size, size))
