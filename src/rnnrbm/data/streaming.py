"""Streaming a prepared corpus: lazy splits read shard by shard, and shard-local epochs.

A corpus whose train split holds more than :data:`STREAM_ABOVE_FRAMES` frames (or any corpus,
with ``data.stream = "on"``) is never decoded into memory as a whole (docs/design.md §10):

- :func:`open_corpus` gives its splits as :class:`CorpusSplit` objects: each is the same
  sequence of ``(T, 88)`` bool rolls as ``load_corpus(...)[split]`` (the index's order, the
  same bits), but its lengths come from the index and a piece is decoded from its shard only
  when it is read. Shards are read through one :class:`ShardCache` per opened corpus, an LRU
  of at most ``window`` packed shards (11 bytes per frame), so memory is bounded by the cache,
  never by the corpus.
- :class:`StreamingBatches` is the training data (``training.fit``'s protocol, like
  ``data.batching.SequenceBatches``): the train split's shards form fixed windows of ``window``
  consecutive shards; epoch ``e`` visits the windows in an order shuffled from ``(seed, e)``
  and, inside each, yields length-bucketed batches of a shuffle of that window's items (pieces,
  or ``max_len`` chunks). An epoch thus reads every shard once and holds one window; it is a
  pure function of ``(seed, e)``, so ``batches(e, k)`` resumes exactly and ``take(e,
  positions)`` gives a data-parallel rank its share.

Frame pretraining reads :meth:`CorpusSplit.frame_sample` (at most :data:`FRAME_SAMPLE_FRAMES`
frames from :data:`FRAME_SAMPLE_SHARDS` shards spread over the split) and validation reads
:meth:`CorpusSplit.head` (the first pieces up to ``validation.frames``, at most
:data:`STREAM_VALID_FRAMES` when that is 0).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, overload

import numpy as np
import torch

from rnnrbm.data.batching import (
    EpochCursor,
    _batch_indices,
    _device,
    _epoch_generator,
    training_batch,
)
from rnnrbm.data.corpus import (
    _SHARD_NAME,
    INDEX,
    N_KEYS,
    SPLITS,
    _bad_index,
    _load_shard,
    _no_train,
    _read_index,
)
from rnnrbm.data.polyphonic import PolyphonicDataset
from rnnrbm.validation import (
    InputError,
    InputTypeError,
    check_positive_int,
    error_message,
)

__all__ = [
    "FRAME_SAMPLE_FRAMES",
    "FRAME_SAMPLE_SHARDS",
    "STREAM_ABOVE_FRAMES",
    "STREAM_MODES",
    "STREAM_VALID_FRAMES",
    "WINDOW_SHARDS",
    "CorpusSplit",
    "ShardCache",
    "StreamingBatches",
    "open_corpus",
    "should_stream",
]

# data.stream = "auto" streams a corpus whose train split holds more frames than this. Below
# it the whole corpus decoded is at most 440 MB of bool rolls (88 bytes per frame), the
# in-memory path's price; frame pretraining on all of it would take 4 times that as float32.
STREAM_ABOVE_FRAMES = 5_000_000
STREAM_MODES = ("auto", "on", "off")
# Shards per window (the default of data.stream_window): with `rnnrbm prepare`'s 1M-frame
# shards a window is ~44 MB packed, and the epoch's shuffle mixes 4 shards' pieces at a time.
WINDOW_SHARDS = 4
# Frame pretraining of a streamed corpus: at most this many frames (352 MB as float32), an
# equal share from each of this many shards spread evenly over the train split (read in turn).
FRAME_SAMPLE_FRAMES = 1_000_000
FRAME_SAMPLE_SHARDS = 16
# Validation of a streamed corpus when validation.frames is 0 ("all"): the first pieces up to
# this many frames (about the size of the Nottingham benchmark's valid split).
STREAM_VALID_FRAMES = 50_000


def should_stream(mode: str, train_frames: int) -> bool:
    """Whether ``data.stream = mode`` streams a corpus of ``train_frames`` training frames:
    ``on`` always, ``off`` never, ``auto`` above :data:`STREAM_ABOVE_FRAMES`."""
    if mode not in STREAM_MODES:
        raise InputError(
            error_message(
                "data.stream", "one of 'auto', 'on', 'off'", repr(mode), "pick one of those"
            )
        )
    return mode == "on" or (mode == "auto" and train_frames > STREAM_ABOVE_FRAMES)


def _shard_number(name: str) -> int:
    m = _SHARD_NAME.fullmatch(name)
    return int(m.group(1)) if m else -1


class _Pieces(NamedTuple):
    """A split's pieces in index order, as arrays (about 90 bytes a piece): the shard (a number
    into the corpus's shard names), the first row there, the frames and the content hash."""

    shard: np.ndarray  # int32
    offset: np.ndarray  # int64
    frames: np.ndarray  # int64
    sha256: np.ndarray  # S64


def _read_pieces(out: Path) -> tuple[dict[str, _Pieces], list[str], int]:
    """The index's pieces by split, the shard names they number, and the number of pieces."""
    index = _read_index(out)
    names: dict[str, int] = {}
    rows: dict[str, list[tuple[int, int, int, str]]] = {s: [] for s in SPLITS}
    try:
        for e in index["pieces"]:
            shard = names.setdefault(str(e["shard"]), len(names))
            rows[e["split"]].append((shard, int(e["offset"]), int(e["frames"]), str(e["sha256"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad_index(out / INDEX, f"a malformed entry ({type(exc).__name__}: {exc})") from exc
    splits = {}
    for split, r in rows.items():
        shard, offset, frames, sha = zip(*r, strict=True) if r else ((), (), (), ())
        splits[split] = _Pieces(
            np.array(shard, dtype=np.int32),
            np.array(offset, dtype=np.int64),
            np.array(frames, dtype=np.int64),
            np.array(sha, dtype="S64"),
        )
    return splits, list(names), len(index["pieces"])


class ShardCache:
    """The packed rolls of at most ``capacity`` shards, least recently used evicted first.

    ``loads`` counts the shards read from disk and ``peak`` the most held at once (the bound a
    test checks); a shard is evicted before the next one is read, so ``peak ≤ capacity``.
    """

    def __init__(self, folder: str | os.PathLike[str], capacity: int) -> None:
        self.folder = Path(folder)
        self.capacity = check_positive_int(capacity, "capacity")
        self._held: OrderedDict[str, tuple[np.ndarray, dict[int, str]]] = OrderedDict()
        self.loads = self.peak = 0

    def __len__(self) -> int:
        return len(self._held)

    @property
    def held(self) -> list[str]:
        """The shards in memory, least recently used first."""
        return list(self._held)

    def get(self, name: str) -> tuple[np.ndarray, dict[int, str]]:
        """A shard's packed rolls ``(frames, 11)`` and its ``offset → sha256`` table."""
        hit = self._held.get(name)
        if hit is not None:
            self._held.move_to_end(name)
            return hit
        while len(self._held) >= self.capacity:
            self._held.popitem(last=False)
        hit = _load_shard(self.folder, name)
        self.loads += 1
        self._held[name] = hit
        self.peak = max(self.peak, len(self._held))
        return hit

    def clear(self) -> None:
        self._held.clear()


class CorpusSplit(Sequence[np.ndarray]):
    """A split of a prepared corpus as a lazy sequence of ``(T, 88)`` bool rolls.

    ``split[i]`` decodes piece ``i`` from its shard (read through ``cache``) and returns a new
    array the view does not keep; ``lengths``, ``frames``, ``len`` and ``shards`` come from the
    index. The order and the bits are those of ``load_corpus(...)[name]``. ``window`` is the
    number of shards per window of :class:`StreamingBatches` over this split.
    """

    def __init__(
        self,
        folder: Path,
        name: str,
        pieces: _Pieces,
        shard_names: Sequence[str],
        cache: ShardCache,
        window: int,
    ) -> None:
        self.folder, self.name, self.cache = folder, name, cache
        self.window = check_positive_int(window, "window")
        self._pieces, self._names = pieces, list(shard_names)
        self.lengths: list[int] = pieces.frames.tolist()
        self.frames = int(pieces.frames.sum())
        by_shard = np.argsort(pieces.shard, kind="stable")  # piece numbers by shard, in order
        ids, firsts = np.unique(pieces.shard[by_shard], return_index=True)
        self._by_shard = {
            self._names[int(k)]: group
            for k, group in zip(ids, np.split(by_shard, firsts[1:]), strict=True)
        }
        self.shards = sorted(self._by_shard, key=lambda s: (_shard_number(s), s))

    def __len__(self) -> int:
        return len(self.lengths)

    @overload
    def __getitem__(self, i: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, i: slice) -> list[np.ndarray]: ...

    def __getitem__(self, i: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"piece {i} of a split of {n} pieces")
        i %= n
        return self.rows(i, 0, self.lengths[i])

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.rows(i, 0, self.lengths[i])

    def shard_of(self, i: int) -> str:
        """The shard holding piece ``i``."""
        return self._names[int(self._pieces.shard[i])]

    def rows(self, i: int, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` of piece ``i``, ``(stop - start, 88)`` bool (only those rows
        are unpacked)."""
        shard, offset = self.shard_of(i), int(self._pieces.offset[i])
        n, sha = self.lengths[i], self._pieces.sha256[i].decode()
        rolls, shas = self.cache.get(shard)
        if shas.get(offset) != sha or offset + n > len(rolls):
            raise _bad_index(self.folder / INDEX, f"piece {sha[:12]}… not where {shard} holds it")
        packed = rolls[offset + start : offset + min(stop, n)]
        return np.unpackbits(packed, axis=1, count=N_KEYS).view(bool)

    def head(self, max_frames: int) -> list[np.ndarray]:
        """The first pieces up to ``max_frames`` frames (at least one), decoded: the rule of
        ``recipes.stages.ValidationMonitor``; the pieces after them are never read."""
        check_positive_int(max_frames, "max_frames")
        taken, n = 0, 0
        for length in self.lengths:
            if taken and n + length > max_frames:
                break
            taken, n = taken + 1, n + length
        return [self[i] for i in range(taken)]

    def sample_shards(self, count: int) -> list[str]:
        """``count`` of the split's shards spread evenly over it (every k-th; all if fewer)."""
        n = len(self.shards)
        count = min(check_positive_int(count, "count"), n)
        return [self.shards[(j * n) // count] for j in range(count)]

    def frame_sample(
        self, max_frames: int = FRAME_SAMPLE_FRAMES, shards: int = FRAME_SAMPLE_SHARDS
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Frames for frame pretraining without decoding the split: the split's pieces in
        ``shards`` shards spread evenly over it (:meth:`sample_shards`), each shard giving at
        most ``max_frames // shards`` frames of its pieces in index order (the last one cut:
        frames are independent examples there). The shards are read one after the other.
        Returns the ``(n ≤ max_frames, 88)`` bool frames and a JSON-able description."""
        check_positive_int(max_frames, "max_frames")
        picked = self.sample_shards(min(shards, max_frames))
        per = max_frames // len(picked)
        parts = []
        for name in picked:
            got = 0
            for i in self._by_shard[name].tolist():
                if got >= per:
                    break
                take = min(self.lengths[i], per - got)
                parts.append(self.rows(i, 0, take))
                got += take
        frames = np.concatenate(parts)
        info = {
            "frames": len(frames),
            "of_frames": self.frames,
            "max_frames": max_frames,
            "shards": picked,
        }
        return frames, info

    def fingerprint(self) -> str:
        """Pieces, frames and a hash of the pieces' hashes (data-parallel ranks compare it)."""
        digest = hashlib.sha256(self._pieces.sha256.tobytes()).hexdigest()
        return f"{len(self)} pieces, {self.frames} frames, sha256 {digest[:16]}"

    def __repr__(self) -> str:
        return (
            f"CorpusSplit({self.name!r}, {len(self)} pieces, {self.frames} frames, "
            f"{len(self.shards)} shards)"
        )


def open_corpus(
    out_dir: str | os.PathLike[str], *, window: int = WINDOW_SHARDS
) -> PolyphonicDataset:
    """A prepared corpus with lazy :class:`CorpusSplit` splits (an empty ``valid`` or ``test``
    left out, as ``load_corpus`` does) sharing one :class:`ShardCache` of ``window`` shards.
    Only the index is read here.

    Raises ``DataFormatError`` for a missing or malformed index (a missing shard when a piece
    of it is read) and ``InputError`` when the corpus has no training piece.
    """
    out = Path(out_dir)
    window = check_positive_int(window, "data.stream_window")
    pieces, names, count = _read_pieces(out)
    if not len(pieces["train"].frames):
        raise _no_train(out, count)
    cache = ShardCache(out, window)
    splits = {
        s: CorpusSplit(out, s, p, names, cache, window) for s, p in pieces.items() if len(p.frames)
    }
    return PolyphonicDataset(name=out.name, source=str(out), splits=splits)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# StreamingBatches


class StreamingBatches(EpochCursor):
    """Re-iterable epochs of padded batches of a :class:`CorpusSplit`, shard-local.

    The protocol of ``data.batching.SequenceBatches`` (``len``, ``order``, ``batches(e,
    start)``, ``take(e, positions)``, iteration, ``state_dict``), with the same items (pieces,
    or ``max_len`` chunks, ``carry_state`` rows of a chunk's piece prefix with a loss mask) and
    batches of at most ``batch_size`` items bucketed by length, but an epoch order made for
    reading shards in turn:

    - the split's shards, in shard order, are cut into fixed windows of ``split.window``
      consecutive shards; an item belongs to the window of its piece's shard;
    - epoch ``e`` draws, from one generator seeded by ``(seed, e)``, the order of the windows,
      then per window (in that order) a permutation of its items, which are bucketed by length
      and cut into batches whose order inside the window is shuffled too.

    Batches never span two windows, so ``len`` (the sum over windows of ``ceil(items /
    batch_size)``) is the same every epoch, an epoch reads each shard once through the split's
    cache (of ``window`` shards) and a data-parallel rank's share (:meth:`take`) too. With
    ``shuffle=False`` windows and items keep their order (still bucketed).
    """

    def __init__(
        self,
        split: CorpusSplit,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        max_len: int | None = None,
        carry_state: bool = False,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if not isinstance(split, CorpusSplit):
            raise InputTypeError(
                error_message(
                    "split",
                    "a CorpusSplit (data.streaming.open_corpus(folder)['train'])",
                    type(split).__name__,
                    "use data.batching.SequenceBatches for rolls in memory",
                )
            )
        self.split = split
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.seed = check_positive_int(seed, "seed", minimum=0)
        step = None if max_len is None else check_positive_int(max_len, "max_len")
        self.carry_state = bool(carry_state) and step is not None
        pieces, starts, sizes = [], [], []
        for p, n in enumerate(split.lengths):
            for s in range(0, n, step or n):
                pieces.append(p)
                starts.append(s)
                sizes.append(min(step or n, n - s))
        self.pieces = np.array(pieces, dtype=np.int64)
        self.starts = np.array(starts, dtype=np.int64)
        self.sizes = np.array(sizes, dtype=np.int64)
        # What bucketing sorts by: the rows a batch holds (prefix + chunk with carry_state).
        self.lengths = self.starts + self.sizes if self.carry_state else self.sizes
        rank = {name: r for r, name in enumerate(split.shards)}
        window = split.window
        piece_window = np.array([rank[split.shard_of(p)] // window for p in range(len(split))])
        window_of = piece_window[self.pieces]
        by_window = np.argsort(window_of, kind="stable")  # items by window, then split order
        cuts = np.flatnonzero(np.diff(window_of[by_window])) + 1
        self.windows: list[np.ndarray] = np.split(by_window, cuts)
        self.shuffle = shuffle
        self.device, self.dtype = _device(device), dtype
        self.epoch = 0

    def __len__(self) -> int:
        b = self.batch_size
        return sum(-(-len(w) // b) for w in self.windows)

    def window_order(self, epoch: int) -> list[int]:
        """The windows in the order epoch ``epoch`` visits them."""
        return self._order(epoch)[0]

    def order(self, epoch: int) -> list[np.ndarray]:
        """Item indices of each batch of ``epoch`` (deterministic, from the index alone)."""
        return self._order(epoch)[1]

    def _order(self, epoch: int) -> tuple[list[int], list[np.ndarray]]:
        g = _epoch_generator(self.seed, epoch)
        n = len(self.windows)
        windows = torch.randperm(n, generator=g).tolist() if self.shuffle else list(range(n))
        out = []
        for w in windows:
            items = self.windows[w]
            m = len(items)
            perm = torch.randperm(m, generator=g) if self.shuffle else torch.arange(m)
            for idx in _batch_indices(
                self.lengths[items].tolist(),
                self.batch_size,
                perm,
                g,
                shuffle=self.shuffle,
                sort_by_length=True,
                drop_last=False,
            ):
                out.append(items[idx.numpy()])
        return windows, out

    def _padded(self, indices: Sequence[np.ndarray]) -> Iterator[tuple[torch.Tensor, ...]]:
        for items in indices:
            rows = items.tolist()
            rolls = [
                self.split.rows(
                    int(self.pieces[i]),
                    0 if self.carry_state else int(self.starts[i]),
                    int(self.starts[i] + self.sizes[i]),
                )
                for i in rows
            ]
            starts = self.starts[items] if self.carry_state else None
            yield training_batch(rolls, self.dtype, self.device, starts)

    def describe(self) -> dict[str, Any]:
        """JSON-able summary: items, batches per epoch, shards, windows and the cache bound."""
        return {
            "pieces": len(self.split),
            "frames": self.split.frames,
            "items": len(self.sizes),
            "batches_per_epoch": len(self),
            "shards": len(self.split.shards),
            "window_shards": self.split.window,
            "windows": len(self.windows),
            "cache_shards": self.split.cache.capacity,
        }
