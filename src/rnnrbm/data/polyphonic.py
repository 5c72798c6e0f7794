"""The four polyphonic-music benchmarks of Boulanger-Lewandowski, Bengio & Vincent (ICML 2012).

A dataset is ``{"train"|"valid"|"test": [sequence: [frame: [MIDI note numbers 21..108]]]}``,
stored as gzipped JSON (``*.json.gz``) or as the original Python-2 pickle (read through
:mod:`rnnrbm.data.safe_pickle`, which never executes code). Loading validates every note and
returns piano rolls: one ``(T, 88)`` bool array per sequence, column ``k`` = MIDI note ``21 + k``
(``music.pianoroll.notes_to_roll``, re-exported here, converts one sequence of such frames).

Reference sizes (sequences and frames per split, from ``shared/data/polyphonic/README.md``)
are in :data:`REFERENCE_SIZES`; ``load_polyphonic`` does not enforce them, the tests do.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from itertools import chain
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from rnnrbm.data.safe_pickle import safe_loads
from rnnrbm.music.pianoroll import HIGHEST_PITCH, LOWEST_PITCH, notes_to_roll
from rnnrbm.validation import DataFormatError, InputError, InputTypeError, error_message

__all__ = [
    "DATASETS",
    "REFERENCE_SIZES",
    "SPLITS",
    "PolyphonicDataset",
    "load_bundled_jsb",
    "load_polyphonic",
    "notes_to_roll",
]

SPLITS = ("train", "valid", "test")
ENV_VAR = "RNNRBM_DATA"

# short name -> file stem in shared/data/polyphonic
DATASETS = {
    "jsb": "jsb_chorales",
    "nottingham": "nottingham",
    "musedata": "musedata",
    "piano-midi": "piano_midi",
}

# (sequences, frames) per split, as tabulated in the shared data README.
REFERENCE_SIZES = {
    "jsb": {"train": (229, 13_807), "valid": (76, 4_602), "test": (77, 4_725)},
    "nottingham": {"train": (694, 176_561), "valid": (173, 45_513), "test": (170, 44_463)},
    "musedata": {"train": (524, 245_202), "valid": (135, 82_755), "test": (124, 64_339)},
    "piano-midi": {"train": (87, 75_911), "valid": (12, 8_540), "test": (25, 19_036)},
}

# accepted spellings of a name -> short name
_ALIASES = {**{k: k for k in DATASETS}, **{v: k for k, v in DATASETS.items()}}
_SUFFIXES = (".json.gz", ".json", ".pickle", ".pkl")
_SHARED_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "polyphonic"


@dataclass(frozen=True, eq=False)
class PolyphonicDataset:
    """Splits of piano rolls: ``splits[name]`` is a list of ``(T_i, 88)`` bool arrays.

    ``name`` is the short dataset name (or the file stem), ``source`` where it was read from.
    A streamed corpus (``data.streaming.open_corpus``) holds lazy sequences instead of lists:
    ``n_frames`` reads their lengths, ``frames`` decodes the whole split.
    """

    name: str
    source: str
    splits: dict[str, list[np.ndarray]] = field(repr=False)

    def __getitem__(self, split: str) -> list[np.ndarray]:
        try:
            return self.splits[split]
        except KeyError:
            raise KeyError(
                error_message("split", f"one of {list(self.splits)}", repr(split), "pick one")
            ) from None

    def frames(self, split: str) -> np.ndarray:
        """All frames of ``split`` concatenated in sequence order: ``(n_frames, 88)`` bool."""
        return np.concatenate(self[split], axis=0)

    def n_frames(self, split: str) -> int:
        rolls = self[split]
        lengths = getattr(rolls, "lengths", None)  # a lazy split (data.streaming) knows them
        return int(sum(lengths)) if lengths is not None else sum(len(r) for r in rolls)

    def __repr__(self) -> str:
        sizes = ", ".join(
            f"{s}={len(v)} seq/{self.n_frames(s)} frames" for s, v in self.splits.items()
        )
        return f"PolyphonicDataset({self.name!r}, {sizes})"


# ---------------------------------------------------------------------------------- validation


def _fail(where: str, expected: str, got: str, fix: str = "fix or re-export the file") -> NoReturn:
    raise DataFormatError(error_message(where, expected, got, fix))


def _locate(source: str, split: str, seqs: Sequence[Any]) -> NoReturn:
    """Slow exact scan, run only once the fast checks found a problem: raise at its first place."""
    for si, seq in enumerate(seqs):
        where = f"{source}: split '{split}', sequence {si}"
        if type(seq) not in (list, tuple):
            _fail(where, "a list of frames", f"{type(seq).__name__} (wrong nesting)")
        if len(seq) == 0:
            _fail(where, "at least one frame", "an empty sequence", "remove the empty sequence")
        for fi, frame in enumerate(seq):
            at = f"{where}, frame {fi}"
            if type(frame) not in (list, tuple):
                shallow = " (nesting one level too shallow)" if type(frame) in (int, float) else ""
                _fail(
                    at,
                    "a frame as a list of MIDI note numbers",
                    f"{type(frame).__name__} {frame!r}{shallow}",
                )
            for note in frame:
                if type(note) is not int:  # bool is a subclass of int but not a note
                    nest = " (nesting one level too deep)" if isinstance(note, list | tuple) else ""
                    _fail(at, "integer MIDI note numbers", f"{type(note).__name__} {note!r}{nest}")
                if not LOWEST_PITCH <= note <= HIGHEST_PITCH:
                    _fail(
                        at,
                        "MIDI notes in 21..108 (the 88 piano keys)",
                        f"note {note}",
                        "drop or transpose notes outside the piano range",
                    )
    raise AssertionError("fast validation flagged a problem the exact scan did not find")


def _split_to_rolls(source: str, split: str, seqs: Any) -> list[np.ndarray]:
    """Validate one split and build its rolls; Python touches each object once, no per-note work."""
    if not isinstance(seqs, list | tuple):
        _fail(f"{source}: split '{split}'", "a list of sequences", type(seqs).__name__)
    if len(seqs) == 0:
        _fail(f"{source}: split '{split}'", "at least one sequence", "an empty list")
    # Type sets via map(type, ...) run at C speed; exact types, so bool is not taken for int.
    ok = set(map(type, seqs)) <= {list, tuple} and all(map(len, seqs))
    frames = list(chain.from_iterable(seqs)) if ok else []
    ok = ok and set(map(type, frames)) <= {list, tuple}
    ok = ok and set(map(type, chain.from_iterable(frames))) <= {int}
    try:
        roll = notes_to_roll(frames) if ok else None
    except (InputError, InputTypeError):  # a note off the piano, or an int beyond int64
        roll = None
    if roll is None:
        _locate(source, split, seqs)
    # The sequences are views into the split's one (n_frames, 88) roll: no per-sequence copies.
    return np.split(roll, np.cumsum([len(s) for s in seqs])[:-1])


def _parse(source: str, raw: Any, splits: Sequence[str]) -> dict[str, list[np.ndarray]]:
    if not isinstance(raw, dict):
        _fail(
            source, 'a mapping {"train": [...], "valid": [...], "test": [...]}', type(raw).__name__
        )
    missing = [s for s in splits if s not in raw]
    if missing:
        _fail(
            source,
            f"splits {list(splits)}",
            f"keys {sorted(map(str, raw))} (missing {missing})",
            "add the missing split or pass splits=(...) naming the ones the file has",
        )
    return {s: _split_to_rolls(source, s, raw[s]) for s in splits}


# ---------------------------------------------------------------------------------- reading


def _read(source: str, data: bytes, suffix: str) -> Any:
    if suffix in (".pickle", ".pkl"):
        return safe_loads(data, source=source)
    if suffix == ".json.gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
            _fail(
                source,
                "a gzip file",
                f"a corrupt or truncated one ({exc})",
                "re-download the file (or drop the .gz suffix if it is plain JSON)",
            )
    try:
        return json.loads(data)
    except UnicodeDecodeError as exc:
        _fail(source, "UTF-8 JSON text", f"undecodable bytes ({exc.reason})", "re-export it")
    except json.JSONDecodeError as exc:
        _fail(
            source,
            "valid JSON",
            f"{exc.msg} at line {exc.lineno}, column {exc.colno}",
            "re-export the file",
        )


def _suffix(name: str) -> str | None:
    return next((s for s in _SUFFIXES if name.lower().endswith(s)), None)


def _load_file(path: Path | Traversable, name: str, splits: Sequence[str]) -> PolyphonicDataset:
    source = str(path)
    suffix = _suffix(path.name)
    if suffix is None:
        raise DataFormatError(
            error_message(
                source,
                f"a file ending in one of {list(_SUFFIXES)}",
                f"{path.name!r}",
                "convert it to .json.gz",
            )
        )
    raw = _read(source, path.read_bytes(), suffix)
    return PolyphonicDataset(name=name, source=source, splits=_parse(source, raw, splits))


def _search_dirs(root: str | Path | None) -> tuple[list[Path], str]:
    """The one directory a name is looked up in, and how it was chosen (for error messages)."""
    if root is not None:
        return [Path(root)], "root="
    if os.environ.get(ENV_VAR):
        return [Path(os.environ[ENV_VAR])], f"${ENV_VAR}"
    if _SHARED_DIR.is_dir():
        return [_SHARED_DIR], "the shared data folder beside the repository"
    return [], "no data folder (root=None, $RNNRBM_DATA unset, no shared folder)"


def load_polyphonic(
    name_or_path: str | Path,
    *,
    root: str | Path | None = None,
    splits: Sequence[str] = SPLITS,
) -> PolyphonicDataset:
    """Load a benchmark by short name (``"jsb"``, ``"nottingham"``, ``"musedata"``,
    ``"piano-midi"``) or from a ``.json.gz`` / ``.json`` / ``.pickle`` / ``.pkl`` path.

    A name is looked up as ``<stem>{.json.gz,.json,.pickle,.pkl}`` in ``root`` if given, else in
    ``$RNNRBM_DATA`` if set, else in ``shared/data/polyphonic`` beside the repository; ``"jsb"``
    falls back to the bundled copy when none of these applies. ``splits`` lists the splits that
    must be present (all three by default); only those are loaded. Raises ``DataFormatError``
    (naming file, split, sequence and frame) for malformed data, ``FileNotFoundError`` when
    nothing matches.
    """
    if not isinstance(name_or_path, str | Path):
        raise InputTypeError(
            error_message(
                "name_or_path", "a dataset name or a path", repr(name_or_path), "pass one"
            )
        )
    splits = tuple(splits)
    if not splits or not all(isinstance(s, str) for s in splits):
        raise InputError(error_message("splits", "split names", repr(splits), "e.g. ('train',)"))
    short = None if isinstance(name_or_path, Path) else _ALIASES.get(name_or_path.lower())
    if short is not None:
        dirs, how = _search_dirs(root)
        tried = [d / (DATASETS[short] + s) for d in dirs for s in _SUFFIXES]
        for path in tried:
            if path.is_file():
                return _load_file(path, short, splits)
        if short == "jsb" and not dirs:
            return load_bundled_jsb(splits=splits)
        raise FileNotFoundError(
            error_message(
                f"dataset {name_or_path!r} (searched {how})",
                "one of " + ", ".join(map(str, tried)) if tried else "a data folder",
                "no such file",
                f"pass root=<folder holding {DATASETS[short]}.json.gz>, set ${ENV_VAR}, or pass "
                "the file's path" + (" (or call load_bundled_jsb())" if short == "jsb" else ""),
            )
        )
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(
            error_message(
                "dataset",
                f"a name in {list(DATASETS)} or the path of an existing {'/'.join(_SUFFIXES)} file",
                f"{str(name_or_path)!r}, which is neither",
                "check the spelling or the path",
            )
        )
    stem = path.name[: len(path.name) - len(_suffix(path.name) or "")]
    return _load_file(path, stem, splits)


def load_bundled_jsb(*, splits: Sequence[str] = SPLITS) -> PolyphonicDataset:
    """JSB Chorales from the copy shipped inside the package (works offline, no data folder)."""
    path = resources.files("rnnrbm.data").joinpath("bundled").joinpath("jsb_chorales.json.gz")
    return _load_file(path, "jsb", tuple(splits))
