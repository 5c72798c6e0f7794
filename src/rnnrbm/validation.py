"""Boundary checks and error types: every user-facing error goes through one message template.

A message names *what* (argument, file, field), what was *expected*, what *came*, and the *fix*,
in the style of scikit-learn's ``check_array``. Errors subclass ``ValueError`` / ``TypeError`` so
callers can catch them the usual way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch

__all__ = [
    "CheckpointError",
    "DataFormatError",
    "InputError",
    "InputTypeError",
    "NonFiniteError",
    "as_data_tensor",
    "check_binary",
    "check_choice",
    "check_number",
    "check_positive_int",
    "check_probability",
    "error_message",
    "parse_dtype",
    "resolve_device",
]

_T = TypeVar("_T")


def error_message(what: str, expected: str, got: str, fix: str) -> str:
    """The one template: ``<what>: expected <expected>, got <got>. Fix: <fix>``."""
    return f"{what}: expected {expected}, got {got}. Fix: {fix}"


class InputError(ValueError):
    """A value has the right type but the wrong content (shape, range, NaN, empty)."""


class InputTypeError(TypeError):
    """A value has the wrong type."""


class DataFormatError(ValueError):
    """A data file is malformed; the message names the file and the place inside it."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, foreign or from an incompatible version."""


class NonFiniteError(FloatingPointError):
    """Training produced NaN/Inf; the message names the parameter and the step."""


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    if isinstance(x, np.ndarray):
        return f"a {x.dtype} array of shape {x.shape}"
    return f"{type(x).__name__}"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto" → cuda when available else cpu; a CUDA request without CUDA is an error."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(
            error_message("device", "'cpu', 'cuda', 'cuda:N' or 'auto'", repr(device), "pass one")
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            error_message(
                "device",
                "an available device",
                f"{device!r} but this PyTorch build sees no CUDA GPU",
                "use device='cpu' (or install a CUDA build of PyTorch on a GPU machine)",
            )
        )
    return dev


def as_data_tensor(
    x: Any,
    name: str,
    *,
    n_features: int | None = None,
    ndim: int = 2,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Convert array-like ``x`` to a finite float tensor of ``ndim`` dims, checking its width.

    Accepts tensors, numpy arrays and nested sequences. Raises ``InputTypeError`` for objects that
    are not array-like, ``InputError`` for wrong rank/width, emptiness or non-finite values.
    """
    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, np.ndarray | Sequence) and not isinstance(x, str | bytes):
        try:
            arr = np.asarray(x)
        except ValueError as exc:  # ragged nested lists
            raise InputError(
                error_message(name, "a rectangular array", "ragged nested sequences", "pad rows")
            ) from exc
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise InputTypeError(
                error_message(
                    name,
                    "numbers (bool, int or float)",
                    f"an array of dtype {arr.dtype}",
                    "convert the data to numbers first",
                )
            )
        t = torch.from_numpy(np.ascontiguousarray(arr))
    else:
        raise InputTypeError(
            error_message(
                name, "a torch.Tensor, numpy array or nested list", _describe(x), "convert it"
            )
        )
    if t.is_complex() or not (t.is_floating_point() or t.dtype in _INTEGER_DTYPES):
        raise InputTypeError(
            error_message(name, "real numbers", _describe(t), "convert the data to float")
        )
    if t.dim() == ndim - 1 and ndim == 2 and n_features is not None and t.numel() == n_features:
        t = t.unsqueeze(0)  # a single example is promoted to a batch of one
    if t.dim() != ndim:
        raise InputError(
            error_message(
                name, f"{ndim} dimensions", _describe(t), "reshape to (n_examples, n_features)"
            )
        )
    if t.shape[0] == 0:
        raise InputError(error_message(name, "at least one example", "0 rows", "pass data"))
    if n_features is not None and t.shape[-1] != n_features:
        raise InputError(
            error_message(
                name,
                f"{n_features} features (columns)",
                f"{t.shape[-1]} in {_describe(t)}",
                "pass data with the model's n_visible columns",
            )
        )
    t = t.to(device=device, dtype=dtype)
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise InputError(
            error_message(
                name,
                "finite values",
                f"{int(bad.sum())} NaN/Inf entries (first at index {idx})",
                "remove or impute them",
            )
        )
    return t


_INTEGER_DTYPES = {
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
}


def check_binary(x: torch.Tensor, name: str) -> torch.Tensor:
    """Raise unless every entry of ``x`` is exactly 0 or 1 (Bernoulli visible units)."""
    bad = (x != 0) & (x != 1)
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise InputError(
            error_message(
                name,
                "binary values (0 or 1) for Bernoulli visible units",
                f"{int(bad.sum())} other values, e.g. {float(x[idx]):g} at index {idx}",
                "threshold the data (x > 0.5) or use GaussianBernoulliRBM for real values",
            )
        )
    return x


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as an int ≥ ``minimum``; bool is rejected."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InputTypeError(
            error_message(name, f"an integer ≥ {minimum}", repr(value), "pass an int")
        )
    if value < minimum:
        raise InputError(error_message(name, f"an integer ≥ {minimum}", repr(value), "raise it"))
    return int(value)


def check_number(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
    zero: bool = False,
    kind: str = "a number",
    fix: str = "change it",
) -> float:
    """Return ``value`` as a float in the range ``[low, high]`` (either end open on request;
    ``zero`` also admits 0, a setting's "none"). ``kind`` and ``fix`` word the message."""
    parts = [f"{'>' if open_low else '≥'} {low:g}"] if low is not None else []
    parts += [f"{'<' if open_high else '≤'} {high:g}"] if high is not None else []
    expected = f"{kind} " + " and ".join(parts) if parts else kind
    expected += " (0: none)" if zero else ""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InputTypeError(error_message(name, expected, repr(value), "pass a number"))
    v = float(value)
    below = low is not None and (v < low or (open_low and v == low))
    above = high is not None and (v > high or (open_high and v == high))
    if (below or above or v != v) and not (zero and v == 0):
        raise InputError(error_message(name, expected, repr(value), fix))
    return v


def check_probability(value: Any, name: str) -> float:
    """Return ``value`` as a float in [0, 1]."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise InputTypeError(
            error_message(name, "a number in [0, 1]", repr(value), "pass a float")
        ) from exc
    if not 0.0 <= v <= 1.0:
        raise InputError(error_message(name, "a number in [0, 1]", repr(value), "clip it"))
    return v


def _spoken(choices: Sequence[Any]) -> str:
    """``'a'``, ``'a' or 'b'``, ``'a', 'b' or 'c'``: the choices as a phrase of reprs."""
    names = [repr(c) for c in choices]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def check_choice(value: Any, name: str, choices: Iterable[_T]) -> _T:
    """Return ``value`` when it is one of ``choices`` (same type and equal), else raise
    ``InputError`` naming them: ``name: expected 'a', 'b' or 'c', got 'x'. Fix: pick one``."""
    options = tuple(choices)
    for c in options:
        if isinstance(value, type(c)) and value == c:
            return c
    raise InputError(error_message(name, _spoken(options), repr(value), "pick one"))


_FLOAT_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def parse_dtype(name: Any) -> torch.dtype:
    """The ``torch.dtype`` named ``"float32"`` or ``"float64"`` (the names model configs and
    checkpoints store), else ``InputError``: ``dtype: expected 'float32' or 'float64', …``."""
    return _FLOAT_DTYPES[check_choice(name, "dtype", _FLOAT_DTYPES)]
