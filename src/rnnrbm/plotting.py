"""Pictures of models and music: filter tiles, sample chains, piano rolls, learning curves.

Works on raw tensors/arrays (no models). matplotlib is imported inside the functions, so
``import rnnrbm`` stays fast and headless machines never touch a GUI toolkit. Figures are built
with the object-oriented API (``matplotlib.figure.Figure`` on an explicit Agg canvas) instead of
``pyplot``: no global backend switch, no figure registry to leak or close, nothing that warns when
another backend is active. Every ``save_*`` writes atomically (``rnnrbm.files.atomic_write``),
so a crash never leaves a half-written image, and returns the ``Path``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rnnrbm.files import atomic_write
from rnnrbm.validation import InputError, InputTypeError, check_positive_int, error_message

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "history_curves",
    "note_name",
    "save_curves",
    "save_filter_tiles",
    "save_piano_roll",
    "save_sample_chains",
    "tile_images",
]

_FORMATS = ("png", "pdf", "svg")
_NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_LOWEST_MIDI, _N_KEYS = 21, 88  # piano-roll column 0 is A0 (MIDI 21), column 87 is C8 (MIDI 108)
_DPI = 100


# ------------------------------------------------------------------------------------ helpers
def _as_array(x: Any, name: str, *, allow_nan: bool = False) -> np.ndarray:
    """A float64 numpy copy of a tensor/array/nested list; Inf (and NaN unless allowed) rejected."""
    if isinstance(x, torch.Tensor):
        arr = x.detach().to("cpu", torch.float64).numpy()
    else:
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputTypeError(
                error_message(
                    name, "a tensor, array or list of numbers", type(x).__name__, "convert it"
                )
            ) from exc
    bad = np.isinf(arr) if allow_nan else ~np.isfinite(arr)
    if bad.any():
        raise InputError(
            error_message(
                name,
                "finite values" if not allow_nan else "no infinite values (NaN leaves a gap)",
                f"{int(bad.sum())} {'Inf' if allow_nan else 'NaN/Inf'} entries",
                "remove them",
            )
        )
    return arr


def _image_shape(image_shape: Any) -> tuple[int, int]:
    if not isinstance(image_shape, Sequence) or len(image_shape) != 2:
        raise InputError(
            error_message("image_shape", "(height, width)", repr(image_shape), "pass two ints")
        )
    return (
        check_positive_int(image_shape[0], "image_shape[0]"),
        check_positive_int(image_shape[1], "image_shape[1]"),
    )


def note_name(midi: int) -> str:
    """Scientific pitch name of a MIDI note number: 60 → ``"C4"``, 69 → ``"A4"``, 21 → ``"A0"``.

    Sharps only (``"C#4"``); octave numbers change at C, with MIDI 60 = middle C = C4.
    """
    m = check_positive_int(midi, "midi", minimum=0)
    if m > 127:
        raise InputError(
            error_message("midi", "a MIDI note number in 0..127", repr(midi), "fix it")
        )
    return f"{_NOTE_NAMES[m % 12]}{m // 12 - 1}"


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` to ``path`` atomically; the format comes from the suffix (png, pdf, svg)."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in _FORMATS:
        raise InputError(
            error_message(
                "path",
                "a file name ending in " + ", ".join("." + f for f in _FORMATS),
                repr(str(path)),
                "change the suffix, e.g. to .png",
            )
        )
    return atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=_DPI))


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)  # explicit Agg canvas: no pyplot, no global backend state
    return fig


def _image_figure(tiled: np.ndarray, title: str | None, left: float = 0.0) -> tuple[Figure, Any]:
    """A figure showing ``tiled`` (values in [0, 1], grey) at 2–8 screen pixels per pixel, with
    ``left`` inches of margin for row labels and a strip on top for the title."""
    rows, cols = tiled.shape
    zoom = max(2.0, min(8.0, 600.0 / max(rows, cols)))
    img_w, img_h = cols * zoom / _DPI, rows * zoom / _DPI
    fig_w, fig_h = max(img_w + left, 2.0), img_h + (0.35 if title else 0.0)
    fig = _new_figure(fig_w, fig_h)
    ax = fig.add_axes((left / fig_w, 0.0, (fig_w - left) / fig_w, img_h / fig_h))
    ax.imshow(tiled, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        fig.suptitle(title, y=1.0 - 0.05 / fig_h, va="top", fontsize=10)
    return fig, ax


# ------------------------------------------------------------------------------------ tiles
def tile_images(
    images: Any,
    image_shape: tuple[int, int],
    n_cols: int | None = None,
    *,
    scale: bool = True,
    pad_value: float = 1.0,
) -> np.ndarray:
    """Lay ``images`` out on a grid: ``(n_rows (H+1) − 1, n_cols (W+1) − 1)`` float64.

    ``images`` is ``(N, H*W)`` (rows reshaped in C order, like MNIST) or ``(N, H, W)``. Tiles fill
    rows left to right; ``n_cols`` defaults to ``ceil(√N)`` and is capped at ``N``. With
    ``scale=True`` each tile is mapped to [0, 1] by its own min and max (a constant tile becomes
    0.5), as in the deeplearning.net ``tile_raster_images``; otherwise values are kept. Tiles are
    separated by 1-pixel lines of ``pad_value``, which also fills unused grid cells.
    """
    H, W = _image_shape(image_shape)
    arr = _as_array(images, "images")
    if arr.ndim == 2 and arr.shape[1] == H * W:
        arr = arr.reshape(-1, H, W)
    elif not (arr.ndim == 3 and arr.shape[1:] == (H, W)):
        raise InputError(
            error_message(
                "images",
                f"shape (N, {H * W}) or (N, {H}, {W}) for image_shape {(H, W)}",
                f"shape {arr.shape}",
                "pass one flattened or 2-D image per row, matching image_shape",
            )
        )
    N = arr.shape[0]
    if N == 0:
        raise InputError(error_message("images", "at least one image", "0", "pass images"))
    if scale:
        lo = arr.min(axis=(1, 2), keepdims=True)
        span = arr.max(axis=(1, 2), keepdims=True) - lo
        arr = np.where(span > 0, (arr - lo) / np.where(span > 0, span, 1.0), 0.5)
    cols = min(
        N, math.ceil(math.sqrt(N)) if n_cols is None else check_positive_int(n_cols, "n_cols")
    )
    rows = math.ceil(N / cols)
    # Pad every tile with one separator row/column, stack into a (rows, cols) grid, then drop the
    # trailing separators: one reshape instead of a Python loop over tiles.
    grid = np.full((rows * cols, H + 1, W + 1), float(pad_value))
    grid[:N, :H, :W] = arr
    grid = grid.reshape(rows, cols, H + 1, W + 1).transpose(0, 2, 1, 3)
    return grid.reshape(rows * (H + 1), cols * (W + 1))[:-1, :-1].copy()


def save_filter_tiles(
    W: Any,
    image_shape: tuple[int, int],
    path: str | os.PathLike[str],
    n_cols: int | None = None,
    max_filters: int = 100,
    title: str | None = None,
) -> Path:
    """Save each hidden unit's incoming weights ``W[:, j]`` as an image (the RBM's "filters").

    ``W (n_v, n_h)`` with ``n_v = H * W``; the first ``max_filters`` units are drawn, each scaled
    to its own [0, 1] range. Returns the path written.
    """
    weights = _as_array(W, "W")
    H, Wd = _image_shape(image_shape)
    if weights.ndim != 2 or weights.shape[0] != H * Wd:
        raise InputError(
            error_message(
                "W",
                f"weights of shape (n_visible={H * Wd}, n_hidden) for image_shape {(H, Wd)}",
                f"shape {weights.shape}",
                "pass the RBM's W (n_v, n_h) and the data's image shape",
            )
        )
    k = check_positive_int(max_filters, "max_filters")
    tiled = tile_images(weights.T[:k], (H, Wd), n_cols)
    fig, _ = _image_figure(tiled, title)
    return _save(fig, path)


def save_sample_chains(
    samples: Any,
    image_shape: tuple[int, int],
    path: str | os.PathLike[str],
    steps_per_row: int | None = None,
    scale: bool | None = None,
    title: str | None = None,
) -> Path:
    """Save snapshots of parallel Gibbs chains: ``samples (n_rows, n_chains, n_v)``.

    Row ``r`` is the state of every chain after ``r · steps_per_row`` Gibbs steps (the layout of
    the deeplearning.net RBM tutorial), so a column follows one chain down the page. With
    ``steps_per_row`` the rows are labelled by step. ``scale=None`` rescales each tile only when
    values leave [0, 1] (e.g. Gaussian visibles); binary samples and means are drawn as they are.
    """
    arr = _as_array(samples, "samples")
    H, Wd = _image_shape(image_shape)
    if arr.ndim != 3 or arr.shape[2] != H * Wd or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(
            error_message(
                "samples",
                f"shape (n_rows, n_chains, {H * Wd}) for image_shape {(H, Wd)}",
                f"shape {arr.shape}",
                "stack snapshots as samples[row, chain] = visible vector",
            )
        )
    n_rows, n_chains, _ = arr.shape
    if scale is None:
        scale = bool(arr.min() < 0.0 or arr.max() > 1.0)
    tiled = tile_images(arr.reshape(-1, H * Wd), (H, Wd), n_chains, scale=scale)
    left = 0.7 if steps_per_row is not None else 0.0
    fig, ax = _image_figure(tiled, title, left=left)
    if steps_per_row is not None:
        step = check_positive_int(steps_per_row, "steps_per_row")
        ax.set_yticks([r * (H + 1) + (H - 1) / 2 for r in range(n_rows)])
        ax.set_yticklabels([f"step {r * step}" for r in range(n_rows)], fontsize=7)
        ax.tick_params(axis="y", length=0)
    return _save(fig, path)


# ------------------------------------------------------------------------------------ music
def save_piano_roll(
    roll: Any,
    path: str | os.PathLike[str],
    title: str | None = None,
    frames_per_beat: int | None = None,
) -> Path:
    """Save a piano roll ``(T, 88)`` (column 0 = MIDI 21 = A0) as an image.

    Time runs left to right (in beats when ``frames_per_beat`` is given, else in frames), pitch
    upwards, with a labelled tick at every C (C1 … C8, MIDI 60 = C4). Values in [0, 1] are drawn
    as grey levels, so note probabilities (e.g. ``expected_visible``) work as well as binary rolls.
    """
    arr = _as_array(roll, "roll")
    if arr.ndim != 2 or arr.shape[1] != _N_KEYS or arr.shape[0] == 0:
        raise InputError(
            error_message(
                "roll",
                f"shape (T, {_N_KEYS}) with T ≥ 1 (column 0 = MIDI {_LOWEST_MIDI})",
                f"shape {arr.shape}",
                "pass one sequence (not a batch): roll[t, key]",
            )
        )
    T = arr.shape[0]
    fpb = (
        None if frames_per_beat is None else check_positive_int(frames_per_beat, "frames_per_beat")
    )
    x_end = T / fpb if fpb else float(T)
    fig = _new_figure(min(24.0, max(6.0, T / 12)), 4.5)
    ax = fig.add_axes((0.08, 0.13, 0.9, 0.77 if title else 0.82))
    lo, hi = _LOWEST_MIDI - 0.5, _LOWEST_MIDI + _N_KEYS - 0.5
    ax.imshow(
        arr.T,
        origin="lower",
        aspect="auto",
        cmap="gray_r",
        vmin=0.0,
        vmax=1.0,
        interpolation="nearest",
        extent=(0.0, x_end, lo, hi),
    )
    cs = [m for m in range(_LOWEST_MIDI, _LOWEST_MIDI + _N_KEYS) if m % 12 == 0]
    ax.set_yticks(cs)
    ax.set_yticklabels([note_name(m) for m in cs])
    ax.set_xlabel("time (beats)" if fpb else "time (frames)")
    ax.set_ylabel("pitch")
    if title:
        ax.set_title(title)
    return _save(fig, path)


# ------------------------------------------------------------------------------------ curves
def save_curves(
    curves: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    xlabel: str = "epoch",
    ylabel: str = "value",
    title: str | None = None,
    log_y: bool = False,
) -> Path:
    """Save learning curves: one line per ``name → values``, point ``k`` at x = k + 1 (epoch 1..n).

    NaN values leave gaps (e.g. a validation score computed every few epochs). ``log_y`` needs
    positive values.
    """
    if not isinstance(curves, Mapping) or not curves:
        raise InputError(
            error_message(
                "curves",
                "a non-empty dict of name → list of floats",
                repr(curves)[:60],
                "pass e.g. {'train': [...], 'valid': [...]}",
            )
        )
    series = {}
    for name, values in curves.items():
        what = f"curves[{name!r}]"
        y = _as_array(values, what, allow_nan=True)
        if y.ndim != 1 or y.size == 0 or np.isnan(y).all():
            raise InputError(
                error_message(
                    what,
                    "a non-empty 1-D list of numbers, not all NaN",
                    f"shape {y.shape}" + (" (all NaN)" if y.size and np.isnan(y).all() else ""),
                    "drop empty series",
                )
            )
        if log_y and (y[~np.isnan(y)] <= 0).any():
            raise InputError(
                error_message(
                    what,
                    "positive values for log_y=True",
                    f"minimum {np.nanmin(y):g}",
                    "use log_y=False or plot a positive quantity",
                )
            )
        series[str(name)] = y
    from matplotlib.ticker import MaxNLocator

    fig = _new_figure(6.4, 4.0)
    ax = fig.add_axes((0.13, 0.13, 0.83, 0.77 if title else 0.82))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    for name, y in series.items():
        x = np.arange(1, y.size + 1)
        ax.plot(x, y, label=name, marker="." if y.size <= 50 else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, path)


def history_curves(history: list[dict[str, float]]) -> dict[str, list[float]]:
    """Curves of a training history for :func:`save_curves`: the training loss and the
    validation figure per epoch; a metric checked every few epochs is joined by straight lines
    between its checks (NaN gaps would leave isolated, invisible points)."""
    names = {
        "train_loss": "training loss (surrogate; exact NLL for NADE)",
        "valid_nll": "validation NLL per frame",
        "neg_pseudo_loglik": "validation −pseudo-log-likelihood per frame",
    }
    curves = {}
    for key, label in names.items():
        y = np.array([h.get(key, np.nan) for h in history], dtype=float)
        seen = np.flatnonzero(~np.isnan(y))
        if not seen.size:
            continue
        inside = np.arange(seen[0], seen[-1] + 1)
        y[inside] = np.interp(inside, seen, y[seen])
        curves[label] = y.tolist()
    return curves
