"""Training data for the music models: a benchmark file, a MIDI file or a folder of MIDI files.

:func:`load_music_data` turns what a user points at into :class:`MusicData`: piano-roll splits
(a :class:`~rnnrbm.data.polyphonic.PolyphonicDataset`) plus how they were framed, so that primers,
melodies and scored files can later be read the same way. A benchmark keeps its canonical
splits; a MIDI folder is split here, deterministically, by a hash of each file's relative path;
a corpus prepared by ``rnnrbm prepare`` keeps the splits and framing of its index, and a large
one (or any, with ``stream="on"``) is opened lazily (``data.streaming``): its pieces are decoded
from their shards when read, never all at once.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rnnrbm.data.corpus import corpus_options, is_corpus, load_corpus
from rnnrbm.data.polyphonic import DATASETS, PolyphonicDataset, load_polyphonic
from rnnrbm.data.streaming import (
    WINDOW_SHARDS,
    CorpusSplit,
    open_corpus,
    should_stream,
)
from rnnrbm.music.midi import MidiReadOptions, MidiRoll, is_midi_path, read_midi, read_midi_folder
from rnnrbm.validation import InputError, error_message

__all__ = ["MusicData", "dataset_frames_per_beat", "load_music_data"]


def dataset_frames_per_beat(name: str) -> int:
    """Frames per beat of a benchmark: 1 (quarter notes) for JSB Chorales, else 2 (eighths)."""
    stem = Path(str(name)).name.lower()
    return 1 if stem in ("jsb", DATASETS["jsb"]) or stem.startswith(DATASETS["jsb"]) else 2


@dataclass
class MusicData:
    """Piano-roll splits for training/evaluation, and how they were made.

    ``kind`` is ``"benchmark"`` (a dataset file with its canonical splits), ``"corpus"`` (a
    folder written by :func:`~rnnrbm.data.corpus.prepare_corpus`, with its splits) or ``"midi"``
    (a MIDI file or folder: splits made here, ``files`` lists each split's files, ``skipped``
    the unreadable ones with their reasons). A streamed corpus has
    :class:`~rnnrbm.data.streaming.CorpusSplit` splits (:attr:`streamed`).
    """

    dataset: PolyphonicDataset
    kind: Literal["benchmark", "corpus", "midi"]
    frames_per_beat: int
    transpose_to_c: bool
    files: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def streamed(self) -> bool:
        """Whether the training pieces are read from shards on demand (``data.streaming``)."""
        return isinstance(self.dataset.splits.get("train"), CorpusSplit)

    def describe(self) -> dict[str, Any]:
        """JSON-able summary (``run.json`` and ``--json`` output); a streamed corpus adds
        ``stream``: its train shards, shards per window and the cache bound."""
        ds = self.dataset
        out = {
            "source": ds.source,
            "name": ds.name,
            "kind": self.kind,
            "frames_per_beat": self.frames_per_beat,
            "transpose_to_c": self.transpose_to_c,
            "splits": {
                s: {"sequences": len(v), "frames": ds.n_frames(s)} for s, v in ds.splits.items()
            },
            "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
        }
        train = ds.splits.get("train")
        if isinstance(train, CorpusSplit):
            out["stream"] = {
                "train_shards": len(train.shards),
                "window_shards": train.window,
                "cache_shards": train.cache.capacity,
            }
        return out


def load_music_data(
    spec: str | os.PathLike[str],
    *,
    options: MidiReadOptions | None = None,
    valid_fraction: float = 0.1,
    stream: str = "auto",
    window: int = WINDOW_SHARDS,
) -> MusicData:
    """Training data from a benchmark name (``jsb``, ``nottingham``, ``musedata``,
    ``piano-midi``), a ``.json.gz``/``.pickle`` file, a MIDI file, a folder of MIDI files or a
    corpus folder prepared by ``rnnrbm prepare`` (read as prepared: ``options`` do not apply).

    A corpus is streamed (``data.streaming.open_corpus``: lazy splits sharing an LRU of
    ``window`` shards) when ``stream`` is ``"on"``, or ``"auto"`` and its train split holds
    more than ``data.streaming.STREAM_ABOVE_FRAMES`` frames; otherwise every roll is decoded
    (``load_corpus``). ``stream="on"`` for anything but a corpus raises ``InputError``.

    MIDI is read with ``options`` (default: eighth-note frames, transposed to C). A folder is
    split deterministically: ``max(1, round(valid_fraction · n))`` files go to ``valid`` (n ≥ 2;
    a single piece has no ``valid`` split) by a hash of their relative path, the rest to
    ``train``; ``all`` holds every file. Unreadable
    files in a folder are skipped and listed; one named explicitly raises ``MidiFileError``
    naming it; pieces without frames are skipped.
    """
    text = str(spec)
    path = Path(text)
    if is_corpus(path):
        framing = corpus_options(path)
        ds = None if stream == "off" else open_corpus(path, window=window)  # the index only
        if ds is None or not should_stream(stream, ds["train"].frames):  # type: ignore[attr-defined]
            ds = load_corpus(path)
        return MusicData(ds, "corpus", framing.frames_per_beat, framing.transpose_to_c)
    if should_stream(stream, 0):
        raise InputError(
            error_message(
                "data.stream",
                "a corpus folder prepared by `rnnrbm prepare` to stream (or 'auto' / 'off')",
                f"'on' for {text!r}, which is not one",
                f"prepare it first (rnnrbm prepare {text} --out CORPUS_DIR), or drop data.stream",
            )
        )
    if not (path.is_dir() or is_midi_path(text)):
        ds = load_polyphonic(text)
        return MusicData(ds, "benchmark", dataset_frames_per_beat(ds.name), True)
    opts = options or MidiReadOptions(transpose_to_c=True)
    kept, skipped = _readable_pieces(path, opts, text)
    root = path if path.is_dir() else path.parent
    splits = _midi_splits([r.source for r in kept], root, valid_fraction)
    ds = PolyphonicDataset(
        name=path.stem if path.is_file() else path.name,
        source=text,
        splits={s: [kept[i].roll for i in idx] for s, idx in splits.items()},
    )
    files = {s: [str(kept[i].source) for i in idx] for s, idx in splits.items()}
    return MusicData(ds, "midi", opts.frames_per_beat, opts.transpose_to_c, files, skipped)


def _readable_pieces(
    path: Path, opts: MidiReadOptions, spec: str
) -> tuple[list[MidiRoll], list[tuple[str, str]]]:
    """The pieces with notes under ``path`` (a file or a folder), and the skipped files with
    their reasons; raises, naming ``spec``, when none is left."""
    if path.is_dir():
        reads, bad = read_midi_folder(path, opts)
        skipped = [(str(p), reason) for p, reason in bad]
    else:
        reads, skipped = [read_midi(path, opts)], []
    kept = []
    for r in reads:
        if len(r.roll) == 0 or not r.roll.any():
            skipped.append((str(r.source), "no notes in the MIDI 21..108 range"))
        else:
            kept.append(r)
    if not kept:
        listed = "; ".join(f"{f}: {reason}" for f, reason in skipped[:3]) or "no .mid files"
        raise InputError(
            error_message(
                f"--data {spec!r}",
                "at least one readable MIDI file with notes",
                f"none ({listed})",
                "check the folder, or convert the files to Standard MIDI Files",
            )
        )
    return kept, skipped


def _valid_rank(path: Path, root: Path) -> str:
    """A stable pseudo-random rank: the split never depends on listing order or the seed."""
    rel = path.relative_to(root) if path.is_relative_to(root) else path
    return hashlib.sha256(rel.as_posix().encode()).hexdigest()


def _midi_splits(sources: list[Path], root: Path, valid_fraction: float) -> dict[str, list[int]]:
    """Indices of ``train``, ``valid`` (absent for one piece) and ``all`` into ``sources``."""
    n = len(sources)
    order = sorted(range(n), key=lambda i: _valid_rank(sources[i], root))
    n_valid = max(1, round(valid_fraction * n)) if n >= 2 else 0
    valid = set(order[:n_valid])
    splits = {
        "train": [i for i in range(n) if i not in valid],
        "valid": sorted(valid),
        "all": list(range(n)),
    }
    if not valid:
        del splits["valid"]  # one piece: nothing to validate on (no empty split)
    return splits
