"""A restricted unpickler for the original dataset pickles of Boulanger-Lewandowski et al. (2012).

``pickle.load`` executes whatever callables a file names (``os.system``, ``eval``, …), so a
downloaded pickle is a program, not data. The original ``*.pickle`` benchmark files are Python-2
protocol-2 pickles of ``{"train"|"valid"|"test": [sequence: [frame: (notes…)]]}`` whose notes are
numpy int64 scalars. Rebuilding them needs exactly three globals, and this module admits only
those, each replaced by a small pure function that checks its arguments:

- ``numpy.core.multiarray.scalar`` / ``numpy._core.multiarray.scalar``: a numpy scalar from its
  dtype and raw bytes; we decode the bytes with ``np.frombuffer`` and return a plain Python
  ``int``/``float``/``bool`` (only boolean, integer and float dtypes are accepted);
- ``numpy.dtype``: the dtype of those scalars (a pure type constructor);
- ``_codecs.encode`` with the ``latin1`` codec only: protocol-2 pickles *written by Python 3*
  store raw bytes this way.

Lists, tuples, dicts, strings and numbers need no globals. Every other global is refused with a
``DataFormatError`` naming the file and the global, before anything is called. numpy arrays
(``numpy._core.multiarray._reconstruct`` + ``numpy.ndarray``) are refused on purpose: the dataset
files never contain them, and admitting ``ndarray.__setstate__`` would enlarge the attack surface
for no benefit. Python-2 ``str`` is decoded with ``encoding="latin1"`` (the only lossless choice
for the raw scalar bytes).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from rnnrbm.validation import DataFormatError, error_message

__all__ = ["RestrictedUnpickler", "safe_load", "safe_loads"]

_SCALAR_GLOBALS = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}
_SCALAR_KINDS = "biuf"  # bool, signed int, unsigned int, float


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only the globals a dataset pickle needs.

    ``source`` names the file in error messages. Use :func:`safe_load` / :func:`safe_loads`.
    """

    def __init__(self, file: io.BufferedIOBase, *, source: str) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        # Called for GLOBAL, STACK_GLOBAL and EXT opcodes: the only way a pickle reaches code.
        if (module, name) in _SCALAR_GLOBALS:
            return self._scalar
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        if (module, name) == ("_codecs", "encode"):
            return self._latin1_encode
        raise DataFormatError(
            error_message(
                f"refused to load global '{module}.{name}' from {self.source}",
                "a plain dataset pickle (lists/tuples/dicts of numbers, numpy scalars)",
                "a pickle that names another callable",
                "this file is not a plain dataset pickle: do not load it with pickle either; "
                "get the dataset as .json.gz",
            )
        )

    def _bad(self, got: str) -> DataFormatError:
        return DataFormatError(
            error_message(
                f"numpy scalar in {self.source}",
                "a bool/int/float dtype and its raw bytes",
                got,
                "re-export the dataset as .json.gz",
            )
        )

    def _scalar(self, dtype: Any, data: Any = None) -> int | float | bool:
        """numpy's ``scalar(dtype, bytes)`` reconstructor, restricted to numeric dtypes."""
        if not isinstance(dtype, np.dtype) or dtype.kind not in _SCALAR_KINDS:
            raise self._bad(f"dtype {dtype!r}")
        if isinstance(data, str):  # Python-2 str read with encoding="latin1"
            data = data.encode("latin1")
        if not isinstance(data, bytes) or len(data) != dtype.itemsize:
            raise self._bad(
                f"{type(data).__name__} data for dtype {dtype} (itemsize {dtype.itemsize})"
            )
        return np.frombuffer(data, dtype=dtype, count=1)[0].item()

    def _latin1_encode(self, text: Any, encoding: Any = "utf-8") -> bytes:
        """``_codecs.encode(str, 'latin1')``, the only codec call protocol-2 bytes need."""
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise self._bad(f"_codecs.encode({type(text).__name__}, {encoding!r})")
        return text.encode("latin1")


def safe_loads(data: bytes, *, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; errors name ``source``."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), source=source).load()
    except DataFormatError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        OverflowError,
        MemoryError,
    ) as exc:
        raise DataFormatError(
            error_message(
                f"pickle file {source}",
                "a readable dataset pickle",
                f"a corrupt or truncated pickle ({type(exc).__name__}: {exc})",
                "re-download the file or use the .json.gz version",
            )
        ) from exc


def safe_load(path: str | Path) -> Any:
    """Read the pickle at ``path`` without executing code; numpy scalars come back as ``int``."""
    path = Path(path)
    return safe_loads(path.read_bytes(), source=str(path))
