"""Frames in keyed blocks: the unit of an evaluation's random streams and of its split over ranks.

Test frames are stacked piece after piece (sequence-then-time order). A *block* is up to
``frames`` consecutive frames of one piece. Everything random about a block — its AIS base
chains, its forward or reverse AIS runs, its accuracy samples — comes from a generator seeded
with ``(seed, stream, piece, block index)``, and every product over its rows is computed on the
block alone (a BLAS product's rounding depends on how many rows it holds). So a frame's estimate
is a function of the evaluation's seed and settings only: not of how many blocks go through one
call, nor of how the blocks are dealt to the ranks of a ``torchrun`` job. The block size follows
from the number of chains per frame (``rows // chains``: a cache-sized AIS chunk on CPU, a large
launch on GPU), so it is fixed by the settings and the device like the seed, never a memory knob.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rnnrbm import distributed
from rnnrbm.validation import check_positive_int

__all__ = [
    "STREAMS",
    "Block",
    "blocks_of",
    "frames_per_block",
    "gather",
    "generator_for",
    "groups",
    "my_share",
    "rows_of",
    "stream_seed",
]

# Chains per block: 512 rows of 88 × 150 is the measured cache optimum of one AIS chunk on CPU
# (core.partition); a GPU needs far larger launches to keep busy.
BLOCK_ROWS = {"cpu": 512, "cuda": 2**16}
STREAMS = ("base", "ais", "raise", "accuracy")


@dataclass(frozen=True)
class Block:
    """Frames ``[start, stop)`` of the stacked test frames: block ``index`` of piece ``piece``."""

    piece: int
    index: int
    start: int
    stop: int

    @property
    def frames(self) -> int:
        return self.stop - self.start


def frames_per_block(chains: int, device: torch.device | str = "cpu") -> int:
    """Frames per block when each frame runs ``chains`` chains (at least one frame)."""
    rows = BLOCK_ROWS["cuda" if torch.device(device).type == "cuda" else "cpu"]
    return max(1, rows // check_positive_int(chains, "chains"))


def blocks_of(lengths: Sequence[int], frames: int) -> list[Block]:
    """Every piece of ``lengths`` frames cut into blocks of ``frames`` (the last one shorter)."""
    frames = check_positive_int(frames, "frames per block")
    out: list[Block] = []
    start = 0
    for piece, n in enumerate(lengths):
        for index, a in enumerate(range(0, n, frames)):
            out.append(Block(piece, index, start + a, start + min(a + frames, n)))
        start += n
    return out


def stream_seed(seed: int, stream: str, block: Block) -> int:
    """The seed of ``block``'s ``stream`` (one of :data:`STREAMS`), from ``seed`` alone."""
    seed = check_positive_int(seed, "seed", minimum=0)
    key = [seed, STREAMS.index(stream), block.piece, block.index]
    hi, lo = np.random.SeedSequence(key).generate_state(2, dtype=np.uint32).tolist()
    return (hi << 31) ^ lo  # < 2**63: a valid manual_seed on every device


def generator_for(seed: int, stream: str, block: Block, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded with :func:`stream_seed`."""
    return torch.Generator(device=device).manual_seed(stream_seed(seed, stream, block))


def my_share(blocks: Sequence[Block]) -> list[Block]:
    """This rank's blocks: every ``world_size``-th, from its rank (all of them in one process)."""
    return list(blocks[distributed.rank() :: distributed.world_size()])


def groups(blocks: Sequence[Block], per_call: int | None) -> Iterator[list[Block]]:
    """``blocks`` in runs of ``per_call`` (all at once when None): how many go through one call."""
    size = len(blocks) if per_call is None else check_positive_int(per_call, "blocks_per_call")
    for i in range(0, len(blocks), max(size, 1)):
        yield list(blocks[i : i + size])


def rows_of(blocks: Sequence[Block], device: torch.device) -> Tensor:
    """The stacked-frame indices of ``blocks``, in order."""
    return torch.cat([torch.arange(b.start, b.stop, device=device) for b in blocks])


def gather(parts: Sequence[tuple[Block, Tensor]], total: int) -> Tensor:
    """Per-block results ``(frames, …)`` of every rank assembled in frame order, on every rank.

    ``parts`` are this rank's; the assembled tensor (on the CPU) has ``total`` rows and is the
    same on every rank."""
    everyone = distributed.all_gather_objects([(b, t.cpu()) for b, t in parts])
    pieces = [p for rank_parts in everyone for p in rank_parts]
    if not pieces:
        return torch.empty(0)
    first = pieces[0][1]
    out = torch.full((total, *first.shape[1:]), float("nan"), dtype=first.dtype)
    for block, values in pieces:
        out[block.start : block.stop] = values
    return out
