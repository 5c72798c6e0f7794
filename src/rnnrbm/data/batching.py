"""Batches of piano-roll sequences: chunking, padding with masks, seeded reproducible shuffles.

Batch-first shapes (docs/design.md §3): a batch is ``(B, T_max, n)`` float, its mask ``(B, T_max)``
bool with ``mask[b, t]`` true on real frames. Padding frames are all-zero; models must ignore
them through the mask.

Reproducibility: ``iterate_batches`` draws one permutation from the ``torch.Generator`` it is
given, so an epoch's order is a function of the generator's state (save ``generator.get_state()``
before the epoch to replay it). ``SequenceBatches`` needs no generator state at all: the order of
epoch ``e`` is a pure function of ``(seed, e)``, and ``batches(e, start=k)`` resumes mid-epoch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from rnnrbm.validation import (
    InputError,
    InputTypeError,
    check_positive_int,
    error_message,
    resolve_device,
)

__all__ = [
    "Chunk",
    "SequenceBatches",
    "chunk_sequences",
    "frame_batches",
    "iterate_batches",
    "pad_sequences",
]

Roll = np.ndarray | torch.Tensor


class Chunk(NamedTuple):
    """``roll[start : start + len(roll)]`` of sequence ``sequence``; ``index`` counts chunks in it.

    ``index == 0`` starts a piece (initial recurrent state); a caller that carries the state
    across chunks continues chunk ``index`` from the final state of chunk ``index - 1``.
    """

    roll: Roll
    sequence: int
    index: int
    start: int


def _device(device: str | torch.device | None) -> torch.device | None:
    return None if device is None else resolve_device(device)


def _to_tensor(x: Roll) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        # torch.from_numpy warns on read-only arrays; copy those (rare) instead.
        return torch.from_numpy(x if x.flags.writeable else x.copy())
    return torch.as_tensor(x)


def _check_rolls(rolls: Sequence[Roll]) -> list[int]:
    """Lengths of ``rolls``; each must be a non-empty ``(T, n)`` with one common ``n``."""
    if len(rolls) == 0:
        raise InputError(error_message("rolls", "at least one sequence", "none", "pass data"))
    width = None
    for i, r in enumerate(rolls):
        if not isinstance(r, np.ndarray | torch.Tensor):
            raise InputTypeError(
                error_message(
                    f"rolls[{i}]", "numpy arrays or torch tensors", type(r).__name__, "convert it"
                )
            )
        shape = tuple(r.shape)
        if len(shape) != 2 or shape[0] == 0 or (width is not None and shape[1] != width):
            raise InputError(
                error_message(
                    f"rolls[{i}]",
                    f"a (T ≥ 1, {width if width is not None else 'n'}) roll",
                    f"shape {shape}",
                    "pass 2-D (time, keys) arrays of one width; drop empty sequences",
                )
            )
        width = shape[1]
    return [int(r.shape[0]) for r in rolls]


def pad_sequences(
    rolls: Sequence[Roll],
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``B`` rolls of shapes ``(T_b, n)`` into ``(B, T_max, n)`` (zeros after ``T_b``)
    and a ``(B, T_max)`` bool mask, true on real frames.

    All frames travel to ``device`` in one transfer, then land in place through the mask.
    ``device=None`` keeps the inputs' device (CPU for numpy).
    """
    lengths = _check_rolls(rolls)
    dev = _device(device)
    if dev is None:  # the first tensor's device, else CPU
        dev = next((r.device for r in rolls if isinstance(r, torch.Tensor)), torch.device("cpu"))
    if all(isinstance(r, np.ndarray) for r in rolls):
        flat = torch.from_numpy(np.concatenate(rolls, axis=0))  # one host array, one transfer
    else:
        flat = torch.cat([_to_tensor(r).to(dev) for r in rolls], dim=0)
    flat = flat.to(device=dev, dtype=dtype)
    lens = torch.tensor(lengths, device=flat.device)
    mask = torch.arange(max(lengths), device=flat.device)[None, :] < lens[:, None]
    batch = flat.new_zeros((len(lengths), max(lengths), flat.shape[1]))
    batch[mask] = flat  # boolean indexing is row-major: sequence by sequence, frame by frame
    return batch, mask


def training_batch(
    rolls: Sequence[Roll],
    dtype: torch.dtype,
    device: torch.device | None,
    starts: Sequence[int] | np.ndarray | None = None,
) -> tuple[torch.Tensor, ...]:
    """``(batch, mask)`` of a training step, or with ``starts`` (carried state: row ``b`` scores
    its frames from ``starts[b]`` on) ``(batch, mask, loss_mask)``.

    Padded and masked on the host, where the lengths are: the rolls then travel to ``device``
    in one copy and the masks stay on the host, so what a model decides from them (which rows
    it scores) needs no sync with the device."""
    batch, mask = pad_sequences(rolls, dtype=dtype)
    if device is not None and device.type == "cuda":  # from page-locked memory: no stream sync
        batch = batch.pin_memory().to(device, non_blocking=True)
    elif device is not None:
        batch = batch.to(device)
    if starts is None:
        return batch, mask
    positions = torch.arange(mask.shape[1])
    return batch, mask, mask & (positions[None, :] >= torch.as_tensor(starts)[:, None])


def chunk_sequences(rolls: Sequence[Roll], max_len: int) -> list[Chunk]:
    """Split each roll into consecutive chunks of ``max_len`` frames (the last may be shorter).

    This is the reset scheme of the RNN-RBM tutorial (each chunk restarts the recurrence); the
    ``Chunk`` fields keep what is needed to carry the state across chunks instead
    (``SequenceBatches(carry_state=True)``). Chunks are views, in order: sequence 0's chunks,
    then sequence 1's, ...
    """
    max_len = check_positive_int(max_len, "max_len")
    lengths = _check_rolls(rolls)
    return [
        Chunk(r[start : start + max_len], s, k, start)
        for s, (r, n) in enumerate(zip(rolls, lengths, strict=True))
        for k, start in enumerate(range(0, n, max_len))
    ]


def _batch_indices(
    lengths: Sequence[int],
    batch_size: int,
    perm: torch.Tensor,
    generator: torch.Generator | None,
    *,
    shuffle: bool,
    sort_by_length: bool,
    drop_last: bool,
) -> list[torch.Tensor]:
    """Cut ``perm`` into batches; with ``sort_by_length``, bucket by length first.

    Bucketing: a stable sort of the (already shuffled) items by decreasing length, cut into
    batches, so each batch holds sequences of near-equal length and pads little; ties keep their
    random order, and the batches' order is then shuffled. The batches' *composition* is thus
    almost fixed across epochs (only among equal lengths does it vary) — the usual trade-off.
    """
    if sort_by_length:
        lens = torch.tensor(lengths)[perm]
        perm = perm[torch.sort(lens, descending=True, stable=True).indices]
    batches = list(torch.split(perm, batch_size))
    if drop_last and len(batches[-1]) < batch_size:
        batches.pop()
    if sort_by_length and shuffle:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
    return batches


def iterate_batches(
    rolls: Sequence[Roll],
    batch_size: int,
    *,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
    max_len: int | None = None,
    sort_by_length: bool = False,
    drop_last: bool = False,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of ``(batch (B, T, n), mask (B, T))`` over ``rolls``.

    ``max_len`` first chunks the sequences (:func:`chunk_sequences`; chunks are independent
    items). The shuffle is ``torch.randperm`` with ``generator`` (``None``: torch's global RNG).
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    items = _items(rolls, max_len)
    lengths = _check_rolls(items)
    perm = torch.randperm(len(items), generator=generator) if shuffle else torch.arange(len(items))
    for idx in _batch_indices(
        lengths,
        batch_size,
        perm,
        generator,
        shuffle=shuffle,
        sort_by_length=sort_by_length,
        drop_last=drop_last,
    ):
        yield pad_sequences([items[i] for i in idx.tolist()], dtype=dtype, device=device)


def _items(rolls: Sequence[Roll], max_len: int | None) -> list[Roll]:
    if max_len is None:
        return list(rolls)
    return [c.roll for c in chunk_sequences(rolls, max_len)]


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # SeedSequence mixes (seed, epoch) into well-separated streams (no seed + epoch collisions).
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class EpochCursor:
    """Epochs of padded batches replayable from any position, shared by
    :class:`SequenceBatches` and ``data.streaming.StreamingBatches``: a subclass gives
    ``order(e)`` (the item indices of each batch of epoch ``e``, a pure function of
    ``(seed, e)``) and ``_padded(indices)`` (the batches of those items)."""

    seed: int
    epoch: int

    def order(self, epoch: int) -> Sequence[Any]:
        raise NotImplementedError

    def _padded(self, indices: Sequence[Any]) -> Iterator[tuple[torch.Tensor, ...]]:
        raise NotImplementedError

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, ...]]:
        """Batches ``start, start + 1, …`` of ``epoch`` as ``(batch, mask)`` (carried state:
        ``(batch, mask, loss_mask)``)."""
        return self._padded(self.order(epoch)[start:])

    def take(self, epoch: int, positions: Iterable[int]) -> Iterator[tuple[torch.Tensor, ...]]:
        """The batches at ``positions`` (in that order) of ``epoch``, as :meth:`batches` yields
        them: a data-parallel rank's share without padding the other ranks' batches."""
        order = self.order(epoch)
        return self._padded([order[p] for p in positions])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self.batches(epoch)

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])


class SequenceBatches(EpochCursor):
    """Re-iterable epochs of padded batches whose order is a pure function of ``(seed, epoch)``.

    ``for batch, mask in loader`` runs epoch ``loader.epoch`` and advances it (on creation of
    the iterator); ``batches(e, start=k)`` replays epoch ``e`` from its ``k``-th batch (resume
    after a checkpoint); ``order(e)`` gives the item indices of every batch. With ``max_len``
    the items are chunks (:attr:`chunks` keeps their sequence/index/start).

    ``carry_state=True`` (with ``max_len``) yields ``(batch, mask, loss_mask)``: each row holds
    its chunk preceded by the frames of its piece before it (``roll[:start + len]``) and
    ``loss_mask`` marks the chunk's frames, so a model that reads the prefix starts the chunk
    from the state carried over the whole piece (``models.sequence``) and scores the chunk only.
    Bucketing then sorts by prefix + chunk length.
    """

    def __init__(
        self,
        rolls: Sequence[Roll],
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        max_len: int | None = None,
        sort_by_length: bool = False,
        drop_last: bool = False,
        carry_state: bool = False,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.seed = check_positive_int(seed, "seed", minimum=0)
        self.chunks = None if max_len is None else chunk_sequences(rolls, max_len)
        self.carry_state = bool(carry_state) and self.chunks is not None
        if self.chunks is None:
            self.items = list(rolls)
        elif self.carry_state:  # each chunk with its piece's earlier frames as context
            self.items = [rolls[c.sequence][: c.start + len(c.roll)] for c in self.chunks]
        else:
            self.items = [c.roll for c in self.chunks]
        self.lengths = _check_rolls(self.items)
        self.shuffle, self.sort_by_length, self.drop_last = shuffle, sort_by_length, drop_last
        self.device, self.dtype = _device(device), dtype
        self.epoch = 0

    def __len__(self) -> int:
        n, b = len(self.items), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def order(self, epoch: int) -> list[torch.Tensor]:
        """Item indices of each batch of ``epoch`` (deterministic)."""
        g = _epoch_generator(self.seed, epoch)
        n = len(self.items)
        perm = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        return _batch_indices(
            self.lengths,
            self.batch_size,
            perm,
            g,
            shuffle=self.shuffle,
            sort_by_length=self.sort_by_length,
            drop_last=self.drop_last,
        )

    def _padded(self, indices: Sequence[torch.Tensor]) -> Iterator[tuple[torch.Tensor, ...]]:
        for idx in indices:
            rows = idx.tolist()
            starts = [self.chunks[i].start for i in rows] if self.carry_state else None  # type: ignore[index]
            yield training_batch([self.items[i] for i in rows], self.dtype, self.device, starts)


def frame_batches(
    frames: Roll,
    batch_size: int,
    generator: torch.Generator | None = None,
    *,
    shuffle: bool = True,
    drop_last: bool = False,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Iterator[torch.Tensor]:
    """One epoch of ``(≤ batch_size, n)`` batches of individual frames (RBM pretraining).

    ``frames`` is ``(n_frames, n)``, e.g. ``PolyphonicDataset.frames("train")``; it is moved to
    ``device`` once, and batches are gathered from a ``randperm`` drawn with ``generator``.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    x = _to_tensor(frames)
    if x.dim() != 2 or x.shape[0] == 0:
        raise InputError(
            error_message(
                "frames",
                "a (n_frames ≥ 1, n) array",
                f"shape {tuple(x.shape)}",
                "concatenate the sequences first (dataset.frames(split))",
            )
        )
    dev = _device(device)
    x = x.to(device=dev if dev is not None else x.device, dtype=dtype)
    n = x.shape[0]
    perm = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    perm = perm.to(x.device)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        yield x[perm[i : i + batch_size]]
