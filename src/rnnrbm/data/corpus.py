"""Prepared corpora: a MIDI folder parsed once, in parallel, into piano-roll shards and an index.

:func:`prepare_corpus` reads every ``*.mid``/``*.midi`` below a folder with a process pool and
stores the rolls in a few NumPy shard files plus one ``index.json`` (``docs/design.md`` §10)::

    CORPUS_DIR/index.json        format, version, read options, one entry per piece, the failures
    CORPUS_DIR/shard-00000.npz   rolls (frames, 11) uint8: (frames, 88) bool packed along keys,
                                 offsets (pieces + 1,) frame offsets, sha256 (pieces,) per piece

A piece is keyed by the sha256 of its bytes and the read options: a re-run parses only new or
changed files (and everything when the options change); cached pieces stay in their shards, new
ones go into new shards. Its split (train/valid/test) is a function of that hash alone, never of
the listing order, the file name or the number of workers. Malformed files never stop the job:
they are reported with their reasons (and remembered, so an unchanged bad file is not re-read).
Shards are written atomically before the index that references them, and the index last, so an
interrupted run leaves the previous index valid; the orphan shards it wrote are overwritten or
removed by the next run. :func:`load_corpus` holds every roll in memory;
``data.streaming.open_corpus`` opens the splits lazily instead (a piece is decoded from its
shard on access) for corpora too large for that.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import re
import time
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from rnnrbm.data.polyphonic import PolyphonicDataset
from rnnrbm.files import atomic_write, atomic_write_bytes
from rnnrbm.music.midi import MidiBounds, MidiFileError, MidiReadOptions, is_midi_path, read_midi
from rnnrbm.validation import (
    DataFormatError,
    InputError,
    check_positive_int,
    check_probability,
    error_message,
)

__all__ = [
    "MIN_FILES_PER_WORKER",
    "CorpusReport",
    "corpus_options",
    "is_corpus",
    "load_corpus",
    "prepare_corpus",
    "split_of",
]

FORMAT = "rnnrbm-corpus"
FORMAT_VERSION = 1
INDEX = "index.json"
N_KEYS = 88
SPLITS = ("train", "valid", "test")
_SHARD = "shard-{:05d}.npz"
_SHARD_NAME = re.compile(r"shard-(\d+)\.npz")
_PIECE = ("sha256", "frames", "key", "key_source", "transposition", "shard", "offset")
_FILE = "<file>"  # stands for the file's path in a remembered failure reason
# A worker is a fresh interpreter ("spawn") importing the library with torch: 2.5-4 s measured
# on 2 cores, while one process parses about 600 short files/s. A pool pays off from about 3,000
# files for 2 workers; fewer new files than this per worker use fewer workers (1: no pool).
MIN_FILES_PER_WORKER = 1000


@dataclass
class CorpusReport:
    """What :func:`prepare_corpus` did. ``files``: MIDI files found; ``parsed``: contents read
    this run (identical files are read once); ``cached``: files whose result came from the
    previous index; ``skipped``: ``(file, reason)`` of the files left out (this run or
    remembered); ``frames``: of every piece in the corpus, ``new_frames``: of those parsed now;
    ``workers``: the parsing processes used (1: in this process)."""

    out_dir: str
    files: int
    pieces: int
    parsed: int
    cached: int
    skipped: list[tuple[str, str]]
    frames: int
    new_frames: int
    splits: dict[str, dict[str, int]]
    shards: int
    workers: int
    seconds: float

    @property
    def files_per_s(self) -> float:
        return self.files / max(self.seconds, 1e-9)

    @property
    def frames_per_s(self) -> float:
        return self.frames / max(self.seconds, 1e-9)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary (``rnnrbm prepare --json``)."""
        d = dataclasses.asdict(self)
        d["skipped"] = [{"file": f, "reason": r} for f, r in self.skipped]
        d["seconds"] = round(self.seconds, 3)
        d["files_per_s"] = round(self.files_per_s, 1)
        d["frames_per_s"] = round(self.frames_per_s)
        return d


@dataclass(frozen=True)
class _Parsed:
    """What a worker sends back for one file: a packed roll and its key, or the reason."""

    packed: np.ndarray | None = None  # (frames, 11) uint8
    key: str | None = None
    key_source: str = "none"
    transposition: int = 0
    error: str | None = None


@dataclass
class _Cache:
    """The previous index's results under the same read options, by content hash."""

    pieces: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Small pieces: hashes, splits, options, the index


def split_of(sha256: str, valid_fraction: float = 0.1, test_fraction: float = 0.1) -> str:
    """The split of a piece with this content hash: the first 32 bits as a fraction u of 1;
    ``test`` when u < test_fraction, ``valid`` when u < test + valid fraction, else ``train``."""
    u = int(sha256[:8], 16) / 2**32
    if u < test_fraction:
        return "test"
    return "valid" if u < test_fraction + valid_fraction else "train"


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _canonical(options: dict[str, Any]) -> str:
    """The read options as one canonical JSON string: half of every piece's cache key."""
    return json.dumps(options, sort_keys=True, separators=(",", ":"))


def is_corpus(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder holding a corpus index written by :func:`prepare_corpus`."""
    index = Path(path) / INDEX
    try:
        with index.open("rb") as f:
            return f'"{FORMAT}"'.encode() in f.read(256)
    except OSError:
        return False


def _bad_index(path: Path, got: str) -> DataFormatError:
    return DataFormatError(
        error_message(
            f"corpus index {str(path)!r}",
            f"a {FORMAT} index (version {FORMAT_VERSION}) written by `rnnrbm prepare`",
            got,
            "prepare the corpus again (rnnrbm prepare MIDI_DIR --out a new folder)",
        )
    )


def _read_index(out: Path) -> dict[str, Any]:
    path = out / INDEX
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _bad_index(path, f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise _bad_index(path, "another kind of JSON file")
    if index.get("format_version") != FORMAT_VERSION:
        raise _bad_index(path, f"version {index.get('format_version')!r}")
    return index


def _write_index(out: Path, index: dict[str, Any]) -> None:
    atomic_write_bytes(out / INDEX, json.dumps(index, indent=1).encode())


def corpus_options(out_dir: str | os.PathLike[str]) -> MidiReadOptions:
    """The read options a corpus was prepared with (frames per beat, transposition, pedal)."""
    path = Path(out_dir)
    try:
        opts = dict(_read_index(path)["options"])
        bounds = MidiBounds(**opts.pop("bounds"))
        return MidiReadOptions(**opts, bounds=bounds)
    except (KeyError, TypeError, InputError) as exc:
        raise _bad_index(path / INDEX, f"unreadable read options ({exc})") from exc


# ---------------------------------------------------------------------------------------------
# Parsing (in worker processes) and shards


def _parse(path: str, options: MidiReadOptions) -> _Parsed:
    """Read one file; any failure comes back as a reason, never as an exception."""
    try:
        m = read_midi(path, options)
    except MidiFileError as exc:
        return _Parsed(error=str(exc))
    except Exception as exc:  # read_midi promises MidiFileError; a file must not stop the job
        return _Parsed(error=f"MIDI file {path!r}: unexpected {type(exc).__name__}: {exc}")
    if len(m.roll) == 0 or not m.roll.any():
        return _Parsed(error="no notes in the MIDI 21..108 range")
    key = None if m.key is None else m.key.name
    return _Parsed(np.packbits(m.roll, axis=1), key, m.key_source, m.transposition)


def _workers(workers: int, n_files: int) -> int:
    """The processes worth starting for ``n_files`` (see ``MIN_FILES_PER_WORKER``)."""
    return max(1, min(workers, n_files // MIN_FILES_PER_WORKER))


def _parse_all(
    paths: Sequence[str], options: MidiReadOptions, workers: int, progress: bool
) -> Generator[_Parsed, None, None]:
    """Results in the order of ``paths``, whatever the number of workers: ``workers`` = 1 in
    this process, else a "spawn" pool (the same on every platform, safe beside threads)."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(paths), unit="file", desc="prepare", leave=False)
    if workers == 1:
        results: Iterator[_Parsed] = (_parse(p, options) for p in paths)
        pool = None
    else:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        chunk = max(1, min(64, len(paths) // (4 * workers)))
        results = pool.map(_parse, paths, repeat(options), chunksize=chunk)
    try:
        for r in results:
            if bar is not None:
                bar.update()
            yield r
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()


class _ShardWriter:
    """Collects packed rolls and writes a shard (atomically) each ``shard_frames`` frames."""

    def __init__(self, out: Path, number: int, shard_frames: int) -> None:
        self.out, self.number, self.shard_frames = out, number, shard_frames
        self.pending: list[tuple[str, np.ndarray]] = []
        self.frames = 0

    def add(self, sha: str, packed: np.ndarray) -> dict[str, Any]:
        """Queue a piece; returns where it will be: ``{"shard": name, "offset": frame}``."""
        where = {"shard": _SHARD.format(self.number), "offset": self.frames}
        self.pending.append((sha, packed))
        self.frames += len(packed)
        if self.frames >= self.shard_frames:
            self.flush()
        return where

    def flush(self) -> None:
        if not self.pending:
            return
        shas, rolls = zip(*self.pending, strict=True)
        arrays = {
            "rolls": np.concatenate(rolls),
            "offsets": np.cumsum([0, *map(len, rolls)], dtype=np.int64),
            "sha256": np.array(shas),
        }
        name = _SHARD.format(self.number)
        atomic_write(self.out / name, lambda f: np.savez_compressed(f, **arrays))
        self.number += 1
        self.pending, self.frames = [], 0


def _load_shard(out: Path, name: str) -> tuple[np.ndarray, dict[int, str]]:
    """A shard's packed rolls and its ``offset → sha256`` table."""
    path = out / name
    try:
        with np.load(path, allow_pickle=False) as z:
            rolls, offsets, shas = z["rolls"], z["offsets"], z["sha256"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataFormatError(
            error_message(
                f"corpus shard {str(path)!r}",
                "a shard named by the corpus index",
                f"{type(exc).__name__}: {exc}",
                "prepare the corpus again (a re-run re-reads the pieces of a missing shard)",
            )
        ) from exc
    return rolls, {int(o): str(s) for o, s in zip(offsets[:-1], shas, strict=True)}


# ---------------------------------------------------------------------------------------------
# prepare_corpus


def _check_dirs(midi_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> None:
    midi, out = Path(midi_dir), Path(out_dir)
    if not midi.is_dir():
        got = "a file" if midi.exists() else "no such folder"
        raise InputError(
            error_message(f"midi_dir {str(midi)!r}", "a folder of MIDI files", got, "check it")
        )
    if out.exists() and not out.is_dir():
        raise InputError(
            error_message(f"out_dir {str(out)!r}", "a folder", "a file", "pass a folder path")
        )
    if out.is_dir() and not is_corpus(out):
        other = [p.name for p in out.iterdir() if not _is_ours(p.name)]
        if other:
            raise InputError(
                error_message(
                    f"out_dir {str(out)!r}",
                    "a new folder, or a corpus written by `rnnrbm prepare` (to update)",
                    f"a folder holding other files ({', '.join(sorted(other)[:3])})",
                    "choose a new or empty folder",
                )
            )


def _is_ours(name: str) -> bool:
    """Shards, the index and the temporary files of their atomic writes."""
    if name.startswith(".") and name.endswith(".tmp"):  # ".shard-00001.npz.k3j_x.tmp"
        name = name[1:].rsplit(".", 2)[0]
    return bool(_SHARD_NAME.fullmatch(name)) or name == INDEX


def _previous(out: Path, options: dict[str, Any]) -> tuple[_Cache, int]:
    """The reusable results of the previous index (same read options, shard still there) and
    the number for the next new shard."""
    cache = _Cache()
    if not is_corpus(out):
        return cache, 0
    index = _read_index(out)
    try:
        numbers = [int(m.group(1)) for e in index["pieces"] if (m := _SHARD_NAME.match(e["shard"]))]
        if _canonical(index["options"]) == _canonical(options):
            for e in index["pieces"]:
                if (out / e["shard"]).is_file():
                    cache.pieces[e["sha256"]] = {k: e[k] for k in _PIECE}
            cache.failures = {f["sha256"]: f["reason"] for f in index["failures"]}
    except (KeyError, TypeError) as exc:
        raise _bad_index(out / INDEX, f"a malformed entry ({type(exc).__name__}: {exc})") from exc
    return cache, max(numbers, default=-1) + 1


def _hash_files(midi: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``(relative path, sha256)`` of every MIDI file below ``midi`` (sorted), and the files
    that could not be read, with their reasons."""
    files = sorted(p for p in midi.rglob("*") if is_midi_path(p) and p.is_file())
    hashed, unreadable = [], []
    for p in files:
        try:
            hashed.append((p.relative_to(midi).as_posix(), _sha256(p)))
        except OSError as exc:
            what = f"MIDI file {str(p)!r}"
            reason = error_message(
                what, "a readable file", f"{type(exc).__name__}: {exc}", "check it"
            )
            unreadable.append((str(p), reason))
    return hashed, unreadable


def _parse_new(
    midi: Path,
    todo: dict[str, str],
    cache: _Cache,
    writer: _ShardWriter,
    options: MidiReadOptions,
    workers: int,
    progress: bool,
) -> int:
    """Parse ``todo`` (sha256 → relative path), adding each result to ``cache`` and each roll
    to ``writer``; returns the frames read."""
    paths = [str(midi / rel) for rel in todo.values()]
    frames = 0
    with closing(_parse_all(paths, options, workers, progress)) as results:
        for (sha, path), res in zip(zip(todo, paths, strict=True), results, strict=True):
            if res.packed is None:
                cache.failures[sha] = str(res.error).replace(path, _FILE)
                continue
            cache.pieces[sha] = {
                "sha256": sha,
                "frames": len(res.packed),
                "key": res.key,
                "key_source": res.key_source,
                "transposition": res.transposition,
                **writer.add(sha, res.packed),
            }
            frames += len(res.packed)
    writer.flush()
    return frames


def _entries(
    hashed: list[tuple[str, str]], cache: _Cache, fractions: tuple[float, float]
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The index's pieces and failures for the files found now, in listing order."""
    pieces, failures = [], []
    for rel, sha in hashed:
        if sha in cache.pieces:
            split = split_of(sha, *fractions)
            pieces.append({"source": rel, "split": split, **cache.pieces[sha]})
        else:
            failures.append({"source": rel, "sha256": sha, "reason": cache.failures[sha]})
    return pieces, failures


def _remove_orphans(out: Path, referenced: set[str]) -> None:
    """Shards no entry references (an interrupted run's, or emptied by removals) and the
    temporary files of interrupted atomic writes."""
    for p in out.iterdir():
        stale = p.name.startswith(".") and p.name.endswith(".tmp") and _is_ours(p.name)
        if stale or (_SHARD_NAME.fullmatch(p.name) and p.name not in referenced):
            p.unlink(missing_ok=True)


def prepare_corpus(
    midi_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    options: MidiReadOptions,
    workers: int = 1,
    shard_frames: int = 1_000_000,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    progress: bool = False,
) -> CorpusReport:
    """Parse the MIDI files below ``midi_dir`` into the corpus folder ``out_dir`` (created, or
    updated incrementally: see the module docstring). ``workers`` > 1 parses in a process pool
    of at most that many processes, one per ``MIN_FILES_PER_WORKER`` new files (the processes
    are spawned: a script that calls this needs the ``if __name__ == "__main__":`` guard); a
    shard holds about ``shard_frames`` frames. Bad files are reported, never raised; raises
    only on bad arguments or folders."""
    start = time.perf_counter()
    check_positive_int(workers, "workers")
    check_positive_int(shard_frames, "shard_frames")
    fractions = (
        check_probability(valid_fraction, "valid_fraction"),
        check_probability(test_fraction, "test_fraction"),
    )
    if sum(fractions) > 1:
        raise InputError(
            error_message(
                "valid_fraction + test_fraction", "at most 1", str(sum(fractions)), "lower them"
            )
        )
    _check_dirs(midi_dir, out_dir)
    midi, out = Path(midi_dir), Path(out_dir)
    opts = dataclasses.asdict(options)
    cache, number = _previous(out, opts)
    hashed, unreadable = _hash_files(midi)
    todo: dict[str, str] = {}  # new contents → the first file holding each
    for rel, sha in hashed:
        if sha not in cache.pieces and sha not in cache.failures:
            todo.setdefault(sha, rel)
    out.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(out, number, shard_frames)
    workers = _workers(workers, len(todo))
    new_frames = _parse_new(midi, todo, cache, writer, options, workers, progress)
    pieces, failures = _entries(hashed, cache, fractions)
    index = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "options": opts,
        "valid_fraction": fractions[0],
        "test_fraction": fractions[1],
        "pieces": pieces,
        "failures": failures,
    }
    _write_index(out, index)  # last: it names only shards already on disk
    referenced = {e["shard"] for e in pieces}
    _remove_orphans(out, referenced)
    skipped = [
        (str(midi / f["source"]), f["reason"].replace(_FILE, str(midi / f["source"])))
        for f in failures
    ]
    return CorpusReport(
        out_dir=str(out),
        files=len(hashed) + len(unreadable),
        pieces=len(pieces),
        parsed=len(todo),
        cached=sum(sha not in todo for _, sha in hashed),
        skipped=sorted(unreadable + skipped),
        frames=sum(e["frames"] for e in pieces),
        new_frames=new_frames,
        splits={
            s: {
                "pieces": sum(e["split"] == s for e in pieces),
                "frames": sum(e["frames"] for e in pieces if e["split"] == s),
            }
            for s in SPLITS
        },
        shards=len(referenced),
        workers=workers,
        seconds=time.perf_counter() - start,
    )


# ---------------------------------------------------------------------------------------------
# load_corpus


def _no_train(out: Path, pieces: int) -> InputError:
    return InputError(
        error_message(
            f"corpus {str(out)!r}",
            "at least one piece in its train split",
            f"{pieces} pieces, none in train",
            "add MIDI files and prepare again, or lower valid_fraction / test_fraction",
        )
    )


def load_corpus(out_dir: str | os.PathLike[str]) -> PolyphonicDataset:
    """The pieces of a prepared corpus as ``train``/``valid``/``test`` splits (an empty
    ``valid`` or ``test`` is left out), every roll in memory as a ``(T, 88)`` bool array.

    Raises ``DataFormatError`` when the index or a shard it names is missing or does not match,
    and ``InputError`` when the corpus has no training piece.
    """
    out = Path(out_dir)
    index = _read_index(out)
    shards: dict[str, tuple[np.ndarray, dict[int, str]]] = {}
    splits: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    try:
        for e in index["pieces"]:
            if e["shard"] not in shards:
                shards[e["shard"]] = _load_shard(out, e["shard"])
            rolls, shas = shards[e["shard"]]
            start, n = int(e["offset"]), int(e["frames"])
            if shas.get(start) != e["sha256"] or start + n > len(rolls):
                raise _bad_index(out / INDEX, f"{e['source']!r} not where {e['shard']} holds it")
            piece = np.unpackbits(rolls[start : start + n], axis=1, count=N_KEYS).view(bool)
            splits[e["split"]].append(piece)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, DataFormatError):
            raise
        raise _bad_index(out / INDEX, f"a malformed entry ({type(exc).__name__}: {exc})") from exc
    if not splits["train"]:
        raise _no_train(out, len(index["pieces"]))
    return PolyphonicDataset(
        name=out.name, source=str(out), splits={s: v for s, v in splits.items() if v}
    )
