"""Batching: exact padding and masks, chunk bookkeeping, seeded reproducible epochs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnrbm.data.batching import (
    SequenceBatches,
    chunk_sequences,
    frame_batches,
    iterate_batches,
    pad_sequences,
)
from rnnrbm.validation import InputError, InputTypeError


def make_rolls(lengths: list[int], n: int = 88, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((t, n)) < 0.2 for t in lengths]


def tagged_rolls(lengths: list[int], n: int = 4) -> list[np.ndarray]:
    """Roll i, frame t holds the binary code of a unique id in its columns → traceable frames."""
    rolls, k = [], 1
    for t in lengths:
        ids = np.arange(k, k + t)
        rolls.append(((ids[:, None] >> np.arange(n)) & 1).astype(np.float32))
        k += t
    return rolls


def frame_ids(batch: torch.Tensor, mask: torch.Tensor) -> list[int]:
    bits = batch[mask].long()
    return (bits << torch.arange(bits.shape[1])).sum(1).tolist()


def test_pad_sequences_exact() -> None:
    rolls = make_rolls([3, 1, 5])
    batch, mask = pad_sequences(rolls)
    assert batch.shape == (3, 5, 88) and batch.dtype == torch.float32
    assert mask.dtype == torch.bool
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]
    for b, r in enumerate(rolls):
        np.testing.assert_array_equal(batch[b, : len(r)].numpy(), r.astype(np.float32))
        assert not batch[b, len(r) :].any()


def test_pad_mixed_inputs_dtype_and_read_only() -> None:
    a = make_rolls([2])[0]
    a.flags.writeable = False  # e.g. a memory-mapped dataset; must not warn (warnings are errors)
    b = torch.ones(3, 88, dtype=torch.uint8)
    batch, mask = pad_sequences([a, b], dtype=torch.float64, device="cpu")
    assert batch.dtype == torch.float64 and batch.shape == (2, 3, 88)
    assert mask.sum().item() == 5 and batch[1].sum().item() == 3 * 88
    batch, _ = pad_sequences([a])
    assert batch.shape == (1, 2, 88)


@pytest.mark.parametrize(
    ("rolls", "pattern"),
    [
        ([], "at least one sequence"),
        ([np.zeros((2, 88)), np.zeros((0, 88))], r"rolls\[1\]: expected a \(T ≥ 1, 88\) roll"),
        ([np.zeros((2, 88)), np.zeros((2, 87))], r"rolls\[1\].*shape \(2, 87\)"),
        ([np.zeros(88)], r"rolls\[0\].*shape \(88,\)"),
    ],
)
def test_pad_errors(rolls: list, pattern: str) -> None:
    with pytest.raises(InputError, match=pattern):
        pad_sequences(rolls)


def test_pad_wrong_type() -> None:
    with pytest.raises(
        InputTypeError, match=r"rolls\[1\]: expected numpy arrays or torch tensors, got list"
    ):
        pad_sequences([np.zeros((1, 88)), [[0] * 88]])


def test_chunk_sequences() -> None:
    rolls = make_rolls([10, 4, 8], n=5)
    chunks = chunk_sequences(rolls, 4)
    assert [len(c.roll) for c in chunks] == [4, 4, 2, 4, 4, 4]
    assert [(c.sequence, c.index, c.start) for c in chunks] == [
        (0, 0, 0), (0, 1, 4), (0, 2, 8), (1, 0, 0), (2, 0, 0), (2, 1, 4),
    ]  # fmt: skip
    for c in chunks:  # chunks re-assemble their sequence exactly
        np.testing.assert_array_equal(c.roll, rolls[c.sequence][c.start : c.start + len(c.roll)])
    with pytest.raises(InputError, match="max_len"):
        chunk_sequences(rolls, 0)


def test_every_frame_exactly_once_per_epoch() -> None:
    lengths = [7, 3, 12, 1, 5, 9, 2]
    rolls = tagged_rolls(lengths, n=8)
    for kw in [
        {},
        {"max_len": 4},
        {"sort_by_length": True},
        {"max_len": 3, "sort_by_length": True},
    ]:
        seen: list[int] = []
        g = torch.Generator().manual_seed(3)
        for batch, mask in iterate_batches(rolls, 3, shuffle=True, generator=g, **kw):
            assert batch.shape[0] <= 3 and batch.shape[:2] == mask.shape
            assert not batch[~mask].any()
            seen += frame_ids(batch, mask)
        assert sorted(seen) == list(range(1, sum(lengths) + 1)), kw


def test_carried_state_batches_hold_prefix_and_score_each_frame_once() -> None:
    lengths = [7, 3, 12, 1, 5, 9, 2]
    rolls = tagged_rolls(lengths, n=8)
    loader = SequenceBatches(rolls, 3, seed=2, max_len=4, sort_by_length=True, carry_state=True)
    assert len(loader) == -(-sum(-(-n // 4) for n in lengths) // 3)
    scored: list[int] = []
    for batch, mask, loss_mask in loader.batches(1):
        assert batch.shape[:2] == mask.shape == loss_mask.shape and not (loss_mask & ~mask).any()
        for m, lm in zip(mask, loss_mask, strict=True):
            first = int(lm.nonzero()[0])  # the chunk starts after its piece's earlier frames
            assert first % 4 == 0 and bool(lm[first:].eq(m[first:]).all()) and not lm[:first].any()
            assert m[: first + 1].all()  # the whole prefix is present
            assert int(lm.sum()) <= 4
        scored += frame_ids(batch, loss_mask)
    assert sorted(scored) == list(range(1, sum(lengths) + 1))
    # without max_len there is nothing to carry: plain (batch, mask) pairs
    assert all(len(b) == 2 for b in SequenceBatches(rolls, 3, carry_state=True).batches(0))


def test_seeded_shuffle_reproducible() -> None:
    rolls = tagged_rolls([4, 6, 2, 8, 3, 5], n=6)

    def epoch(seed: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(seed)
        return [frame_ids(b, m) for b, m in iterate_batches(rolls, 2, shuffle=True, generator=g)]

    assert epoch(1) == epoch(1)
    assert epoch(1) != epoch(2)
    unshuffled = [frame_ids(b, m) for b, m in iterate_batches(rolls, 2, shuffle=False)]
    assert [i for ids in unshuffled for i in ids] == list(range(1, 29))


def test_sequence_batches_epochs_are_functions_of_seed_and_epoch() -> None:
    rolls = tagged_rolls([4, 6, 2, 8, 3, 5, 7], n=6)
    a = SequenceBatches(rolls, 3, seed=7)
    b = SequenceBatches(rolls, 3, seed=7)
    assert len(a) == 3
    ep0 = [frame_ids(x, m) for x, m in a]
    ep1 = [frame_ids(x, m) for x, m in a]
    assert a.epoch == 2 and ep0 != ep1
    # A fresh loader resumed at epoch 1, batch 1 replays the same batches.
    b.load_state_dict({"seed": 7, "epoch": 1})
    assert [frame_ids(x, m) for x, m in b.batches(b.epoch, start=1)] == ep1[1:]
    assert [t.tolist() for t in a.order(0)] == [t.tolist() for t in b.order(0)]
    assert [t.tolist() for t in SequenceBatches(rolls, 3, seed=8).order(0)] != [
        t.tolist() for t in a.order(0)
    ]
    assert sorted(i for ids in ep0 for i in ids) == list(range(1, 36))


def test_sequence_batches_drop_last_and_chunks() -> None:
    rolls = tagged_rolls([10, 4, 8], n=5)
    loader = SequenceBatches(rolls, 4, max_len=4, drop_last=True, seed=0)
    assert loader.chunks is not None and len(loader.chunks) == 6
    assert len(loader) == 1
    (batch, mask), *rest = list(loader)
    assert not rest and batch.shape[0] == 4 and mask.shape == (4, 4)


def test_bucketing_reduces_padding() -> None:
    rolls = make_rolls([1, 50, 2, 49, 3, 48, 4, 47], n=3)
    g = torch.Generator().manual_seed(0)

    def padding(sort: bool) -> int:
        g.manual_seed(0)
        return sum(
            int((~m).sum()) for _, m in iterate_batches(rolls, 2, generator=g, sort_by_length=sort)
        )

    assert padding(True) == (50 - 49) + (48 - 47) + (4 - 3) + (2 - 1)
    assert padding(False) > padding(True)


def test_frame_batches() -> None:
    frames = tagged_rolls([23], n=6)[0]
    g = torch.Generator().manual_seed(0)
    batches = list(frame_batches(frames, 5, g))
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    ids = [i for b in batches for i in frame_ids(b, torch.ones(len(b), dtype=torch.bool))]
    assert sorted(ids) == list(range(1, 24)) and ids != list(range(1, 24))
    again = list(frame_batches(frames, 5, torch.Generator().manual_seed(0)))
    assert all(torch.equal(x, y) for x, y in zip(batches, again, strict=True))
    assert [len(b) for b in frame_batches(frames, 5, g, drop_last=True)] == [5] * 4
    first = next(frame_batches(frames, 23, shuffle=False, dtype=torch.float64))
    assert first.dtype == torch.float64 and torch.equal(first, torch.from_numpy(frames).double())
    with pytest.raises(InputError, match="frames: expected a"):
        next(frame_batches(np.zeros((0, 88)), 4))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device() -> None:
    rolls = make_rolls([3, 5])
    batch, mask = pad_sequences(rolls, device="cuda")
    assert batch.is_cuda and mask.is_cuda
    x = next(frame_batches(np.concatenate(rolls), 4, device="cuda"))
    assert x.is_cuda
