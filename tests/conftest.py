"""Shared fixtures: brute-force oracles independent of the library, and the shared data path."""

from __future__ import annotations

import gzip
import itertools
import math
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "polyphonic"


def all_binary_states(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Every vector of {0,1}^n, shape (2**n, n), in lexicographic order."""
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=dtype).reshape(2**n, n)


def brute_joint_log_z(W: torch.Tensor, b_v: torch.Tensor, b_h: torch.Tensor) -> float:
    """log Σ_{v,h} exp(v·b_v + h·b_h + vᵀWh) by full enumeration of both layers (float64)."""
    W, b_v, b_h = W.double(), b_v.double(), b_h.double()
    V = all_binary_states(W.shape[0])
    H = all_binary_states(W.shape[1])
    neg_e = (V @ b_v)[:, None] + (H @ b_h)[None, :] + V @ W @ H.T
    return float(torch.logsumexp(neg_e.flatten(), 0))


def bars_and_stripes(side: int = 3) -> torch.Tensor:
    """All 2·2^side − 2 distinct bars-and-stripes images, flattened (14 for 3×3)."""
    patterns = set()
    for bits in itertools.product([0, 1], repeat=side):
        rows = np.repeat(np.array(bits)[:, None], side, 1)
        patterns.add(tuple(rows.flatten()))
        patterns.add(tuple(rows.T.flatten()))
    return torch.tensor(sorted(patterns), dtype=torch.float32)


@pytest.fixture
def oracle():
    """Namespace of brute-force helpers for tests."""

    class _Oracle:
        states = staticmethod(all_binary_states)
        joint_log_z = staticmethod(brute_joint_log_z)
        bars_and_stripes = staticmethod(bars_and_stripes)
        log_sqrt_2pi = 0.5 * math.log(2 * math.pi)

    return _Oracle


@pytest.fixture
def shared_data() -> Path:
    """../shared/data/polyphonic beside the checkout; tests needing it skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


# ----------------------------------------------------------------------------- IDX files
IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C}
IDX_CODES |= {np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(arr: np.ndarray, code: int) -> bytes:
    """The IDX encoding written from the format description (big-endian header and values)."""
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray, *, gz: bool = False) -> Path:
    data = idx_bytes(arr, IDX_CODES[arr.dtype.type])
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_mnist(folder: Path, n: int = 7, *, gz: bool = True, dotted: bool = False) -> np.ndarray:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    sep = "." if dotted else "-"
    suffix = ".gz" if gz else ""
    for split in ("train", "t10k"):
        write_idx(folder / f"{split}-images{sep}idx3-ubyte{suffix}", images, gz=gz)
        write_idx(folder / f"{split}-labels{sep}idx1-ubyte{suffix}", labels, gz=gz)
    return images


@pytest.fixture
def idx():
    """Writers of IDX files from the format description (MNIST loader and CLI tests)."""

    class _IDX:
        encode = staticmethod(idx_bytes)
        write = staticmethod(write_idx)
        make_mnist = staticmethod(make_mnist)

    return _IDX


# ----------------------------------------------------------------------------- music
@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models: one thread avoids OpenMP oversubscription on a busy 2-core machine
    (measured: a 3-epoch run took 31 s with 2 threads beside another job, 0.8 s with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


Notes = Iterable[tuple[int, float, float]]  # (MIDI pitch, start beat, end beat)


def write_midi(path: Path, notes: Notes, *, key: int | None = None, bpm: float = 120.0) -> Path:
    """notes: (pitch, start_beat, end_beat); an optional key signature fixes the transposition."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    inst = pretty_midi.Instrument(program=0)
    sec = 60.0 / bpm
    for pitch, a, b in notes:
        inst.notes.append(pretty_midi.Note(velocity=90, pitch=pitch, start=a * sec, end=b * sec))
    pm.instruments.append(inst)
    if key is not None:
        pm.key_signature_changes.append(pretty_midi.KeySignature(key, 0.0))
    pm.write(str(path))
    return path


def roll_of(notes: Notes, n_frames: int, fpb: int = 2) -> np.ndarray:
    """Expected (T, 88) roll of notes on beat positions, ``fpb`` frames per beat."""
    r = np.zeros((n_frames, 88), dtype=bool)
    for pitch, a, b in notes:
        r[round(a * fpb) : round(b * fpb), pitch - 21] = True
    return r


def chords(n_beats: int = 8, root: int = 60) -> list[tuple[int, int, int]]:
    """A chord per beat: root, third and fifth of a rising pattern."""
    return [(root + d + (i % 3), i, i + 1) for i in range(n_beats) for d in (0, 4, 7)]


def bad_files(folder: Path) -> dict[str, Path]:
    """The four corrupt inputs of the issue: zero-byte, truncated, text, absurd header."""
    folder.mkdir(parents=True, exist_ok=True)
    good = write_midi(folder / "good.mid", chords(8, 60)).read_bytes()
    files = {
        "zero-byte": b"",
        "truncated": good[: len(good) // 2],
        "text": b"This is a text file renamed to .mid\n",
        "absurd-header": b"MThd" + struct.pack(">LHHH", 6, 1, 65535, 480) + good[14:],
    }
    (folder / "good.mid").unlink()
    out = {}
    for name, data in files.items():
        out[name] = folder / f"{name}.mid"
        out[name].write_bytes(data)
    return out


def tiny_music_model(name: str = "rnn-rbm", seed: int = 0) -> Any:
    """An 88-key model with 3 hidden units (a plain RBM for ``"rbm"``), biases moved off 0."""
    from rnnrbm.models import RBM, build_sequence_model

    if name == "rbm":
        model = RBM(88, 3, k=1, seed=seed)
    else:
        k = None if name == "rnn-nade" else 1
        rec = None if name == "rtrbm" else 4
        model = build_sequence_model(name, n_hidden=3, n_recurrent=rec, k=k, seed=seed)
    with torch.no_grad():  # visible biases away from 0 so samples are not coin flips
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + 1)) * 0.5)
    return model.eval()


@pytest.fixture
def music() -> type:
    """Builders of MIDI files (good and the four corrupt kinds), expected rolls and tiny 88-key
    models (generation, scoring, music-data and corpus tests). MIDI files are written with
    pretty_midi at 120 bpm (a beat = 0.5 s)."""

    class _Music:
        write_midi = staticmethod(write_midi)
        roll_of = staticmethod(roll_of)
        chords = staticmethod(chords)
        bad_files = staticmethod(bad_files)
        tiny = staticmethod(tiny_music_model)
        C_MAJOR = 0  # pretty_midi key numbers: 0..11 major on C..B
        D_MAJOR = 2

    return _Music
