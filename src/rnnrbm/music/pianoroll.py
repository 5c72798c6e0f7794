"""Binary piano-rolls: conversions, quantisation, transposition and key estimation.

A roll is a ``(T, 88)`` binary numpy array (this module returns ``bool``; it accepts bool or any
0/1 numbers): row ``t`` is frame ``t`` of a beat-aligned grid, column ``k`` is MIDI pitch
``21 + k`` (A0 … C8). A *note* is a held run of 1s in one column: ``Note(pitch, start_frame,
end_frame)`` with ``end_frame`` exclusive.

Keys are found with the Krumhansl–Schmuckler algorithm (Krumhansl 1990, *Cognitive Foundations
of Musical Pitch*, ch. 4): the Pearson correlation of a duration-weighted pitch-class histogram
with the 24 rotations of the Krumhansl–Kessler (1982) major and minor key profiles; the best
correlation names the key.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import NamedTuple

import numpy as np

from rnnrbm.validation import InputError, InputTypeError, error_message

__all__ = [
    "HIGHEST_PITCH",
    "KK_MAJOR",
    "KK_MINOR",
    "LOWEST_PITCH",
    "N_KEYS",
    "Key",
    "Note",
    "Transposed",
    "check_roll",
    "estimate_key",
    "key_correlations",
    "notes_to_roll",
    "pitch_class_histogram",
    "quantise",
    "roll_from_notes",
    "roll_to_frames",
    "roll_to_notes",
    "shift_to_c",
    "transpose",
    "transpose_to_c",
]

LOWEST_PITCH = 21  # A0, column 0
HIGHEST_PITCH = 108  # C8, column 87
N_KEYS = HIGHEST_PITCH - LOWEST_PITCH + 1  # 88

# Krumhansl & Kessler (1982) probe-tone ratings, index 0 = the tonic, then rising semitones.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
PITCH_CLASS_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

# Quantisation tolerance, as a fraction of a frame: float noise in tick→seconds conversions is
# ~1e-12 s, far below this, while musically meaningful offsets are far above it.
_EPS = 1e-6


class Note(NamedTuple):
    """A held run: MIDI ``pitch`` sounding in frames ``start_frame … end_frame − 1``."""

    pitch: int
    start_frame: int
    end_frame: int


class Key(NamedTuple):
    """A key: tonic pitch class (0 = C … 11 = B), ``mode`` "major"/"minor", and the Pearson
    correlation of the piece's pitch-class histogram with that key's profile (NaN if unknown)."""

    tonic_pc: int
    mode: str
    correlation: float

    @property
    def name(self) -> str:
        return f"{PITCH_CLASS_NAMES[self.tonic_pc]} {self.mode}"


class Transposed(NamedTuple):
    """Result of a transposition: the moved roll (or notes), the shift in semitones, and how many
    notes were dropped because they left MIDI 21..108."""

    value: np.ndarray | list[Note]
    shift: int
    dropped: int


# ---------------------------------------------------------------------------------------------
# Conversions


def check_roll(roll: object, name: str = "roll") -> np.ndarray:
    """Return ``roll`` as a ``(T, 88)`` bool array, raising for wrong type, shape or values."""
    if not isinstance(roll, np.ndarray):
        if hasattr(roll, "detach"):  # a torch tensor, without importing torch here
            roll = roll.detach().cpu().numpy()
        else:
            raise InputTypeError(
                error_message(name, "a (T, 88) numpy array", type(roll).__name__, "np.asarray it")
            )
    if roll.ndim != 2 or roll.shape[1] != N_KEYS:
        raise InputError(
            error_message(
                name,
                f"shape (T, {N_KEYS}) with column k = MIDI pitch {LOWEST_PITCH} + k",
                f"shape {roll.shape}",
                "pass one piece as a (time, 88) piano-roll",
            )
        )
    if roll.dtype == bool:
        return roll
    if roll.dtype.kind not in "biuf":
        raise InputTypeError(
            error_message(name, "bool or 0/1 numbers", f"dtype {roll.dtype}", "convert it")
        )
    bad = (roll != 0) & (roll != 1)
    if bad.any():
        t, k = (int(i) for i in np.argwhere(bad)[0])
        raise InputError(
            error_message(
                name,
                "binary values (0 or 1)",
                f"{int(bad.sum())} other values, e.g. {roll[t, k]!r} at frame {t}, column {k}",
                "threshold the roll (roll > 0.5)",
            )
        )
    return roll != 0


def notes_to_roll(frames: Sequence[Sequence[int]]) -> np.ndarray:
    """Dataset frames (one list of sounding MIDI pitches per time step) → ``(T, 88)`` bool roll.

    This is the format of the Boulanger-Lewandowski et al. (2012) benchmark files: MIDI note
    numbers 21..108, column ``k`` = pitch ``21 + k``; one fancy-indexed write builds the roll.
    Non-integer notes raise ``InputTypeError``, notes off the piano ``InputError``.
    """
    lengths = np.fromiter(map(len, frames), dtype=np.int64, count=len(frames))
    pitches = np.array(list(chain.from_iterable(frames)))
    if pitches.size and pitches.dtype.kind not in "iu":
        raise InputTypeError(
            error_message("frames", "integer MIDI note numbers", f"dtype {pitches.dtype}", "round")
        )
    pitches = pitches.astype(np.int64)
    rows = np.repeat(np.arange(len(frames)), lengths)
    bad = (pitches < LOWEST_PITCH) | (pitches > HIGHEST_PITCH)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(
            error_message(
                "frames",
                f"MIDI notes in {LOWEST_PITCH}..{HIGHEST_PITCH} (the 88 piano keys)",
                f"note {pitches[i]} in frame {rows[i]} (range {pitches.min()}..{pitches.max()})",
                "transpose the piece or drop notes outside the piano range",
            )
        )
    roll = np.zeros((len(frames), N_KEYS), dtype=bool)
    roll[rows, pitches - LOWEST_PITCH] = True
    return roll


def roll_to_frames(roll: np.ndarray) -> list[list[int]]:
    """``(T, 88)`` roll → one sorted list of sounding MIDI pitches per frame."""
    roll = check_roll(roll)
    t, k = np.nonzero(roll)  # row-major: sorted by frame, then pitch
    splits = np.searchsorted(t, np.arange(1, roll.shape[0]))
    return [part.tolist() for part in np.split(k + LOWEST_PITCH, splits)] if len(roll) else []


def _runs(roll: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Held runs of 1s per column: (column, start, end) arrays, end exclusive, column-major."""
    padded = np.zeros((roll.shape[0] + 2, roll.shape[1]), dtype=np.int8)
    padded[1:-1] = roll
    d = np.diff(padded, axis=0).T  # (88, T+1): +1 at an onset, −1 one past an offset
    col_on, start = np.nonzero(d == 1)
    _, end = np.nonzero(d == -1)  # same column-major order, so runs pair up one-to-one
    return col_on, start, end


def roll_to_notes(roll: np.ndarray) -> list[Note]:
    """Merge held frames (consecutive 1s in a column) into notes, sorted by (start, pitch)."""
    col, start, end = _runs(check_roll(roll))
    order = np.lexsort((col, start))
    return [
        Note(int(c) + LOWEST_PITCH, int(s), int(e))
        for c, s, e in zip(col[order], start[order], end[order], strict=True)
    ]


def roll_from_notes(notes: Sequence[Note] | np.ndarray, n_frames: int | None = None) -> np.ndarray:
    """Notes → ``(n_frames, 88)`` bool roll (``n_frames`` defaults to the last note's end).

    ``notes``: a list of :class:`Note` or an ``(N, 3)`` int array of (pitch, start, end) rows.
    Overlapping notes of one pitch simply merge; notes outside 21..108 raise.
    """
    if isinstance(notes, np.ndarray):
        arr = notes.astype(np.int64).reshape(-1, 3)
    else:
        arr = np.asarray([tuple(n) for n in notes], dtype=np.int64).reshape(-1, 3)
    pitch, start, end = arr.T
    length = int(end.max(initial=0)) if n_frames is None else int(n_frames)
    if ((pitch < LOWEST_PITCH) | (pitch > HIGHEST_PITCH)).any() or (start < 0).any():
        raise InputError(
            error_message(
                "notes",
                f"pitches in {LOWEST_PITCH}..{HIGHEST_PITCH} and start_frame ≥ 0",
                f"pitches {pitch.min()}..{pitch.max()}, first start {start.min()}",
                "use transpose() first, which drops and counts notes leaving the range",
            )
        )
    # Difference array: +1 at the onset, −1 at the offset, cumulative sum > 0 means sounding.
    diff = np.zeros((length + 1, N_KEYS), dtype=np.int64)
    keep = end > start
    col = pitch[keep] - LOWEST_PITCH
    np.add.at(diff, (np.minimum(start[keep], length), col), 1)
    np.add.at(diff, (np.minimum(end[keep], length), col), -1)
    return np.cumsum(diff, axis=0)[:length] > 0


# ---------------------------------------------------------------------------------------------
# Quantisation


def quantise(
    onsets: np.ndarray, offsets: np.ndarray, boundaries: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Map notes sounding over ``[onset, offset)`` to frame runs ``[start_frame, end_frame)``.

    ``boundaries`` (shape ``(T + 1,)``, increasing, any unit such as seconds) delimit frame
    ``f = [boundaries[f], boundaries[f + 1])``. The rule:

    1. a note is on in every frame that it covers for **more than half** of the frame's length
       (so a note slightly early or late snaps to the nearest grid, and a one-frame note shifted
       by exactly half a frame still takes one frame, not two);
    2. a note that covers no frame that much (shorter than about half a frame, e.g. a grace
       note or a staccato 32nd) is on in the one frame where it sounds longest, i.e. the frame
       holding its midpoint, so it is never lost.

    Returns int64 arrays ``(start_frame, end_frame)``, end exclusive, ``end > start`` always.
    Notes past the last boundary are clipped to the grid.
    """
    on = np.asarray(onsets, dtype=np.float64)
    off = np.maximum(np.asarray(offsets, dtype=np.float64), on)
    b = np.asarray(boundaries, dtype=np.float64)
    n = len(b) - 1
    if n < 1:
        raise InputError(
            error_message("boundaries", "at least 2 frame boundaries", f"{len(b)}", "extend it")
        )
    width = np.diff(b)
    # Frame holding each onset / offset (clipped to the grid).
    f_on = np.clip(np.searchsorted(b, on, side="right") - 1, 0, n - 1)
    f_off = np.clip(np.searchsorted(b, off, side="right") - 1, 0, n - 1)
    # Coverage of the first and last touched frames (the ones between are fully covered).
    cover_first = np.minimum(off, b[f_on + 1]) - np.maximum(on, b[f_on])
    cover_last = np.minimum(off, b[f_off + 1]) - np.maximum(on, b[f_off])
    start = np.where(cover_first > (0.5 + _EPS) * width[f_on], f_on, f_on + 1)
    end = np.where(cover_last > (0.5 + _EPS) * width[f_off], f_off + 1, f_off)
    # Rule 2: nothing covered by more than half → the frame of the midpoint.
    short = end <= start
    mid = np.clip(np.searchsorted(b, 0.5 * (on + off), side="right") - 1, 0, n - 1)
    start = np.where(short, mid, start)
    end = np.where(short, mid + 1, end)
    return start.astype(np.int64), end.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Transposition


def transpose(
    x: np.ndarray | Sequence[Note], semitones: int
) -> tuple[np.ndarray | list[Note], int]:
    """Shift a roll (or a list of notes) by ``semitones``; returns ``(result, n_dropped)``.

    Notes pushed outside MIDI 21..108 are dropped and counted (a held run counts as one note).
    """
    s = int(semitones)
    if isinstance(x, np.ndarray) or hasattr(x, "detach"):
        roll = check_roll(x)
        out = np.zeros_like(roll)
        lo, hi = min(max(-s, 0), N_KEYS), max(min(N_KEYS - s, N_KEYS), 0)  # kept source columns
        src, dst = slice(lo, max(lo, hi)), slice(lo + s, max(lo, hi) + s)
        out[:, dst] = roll[:, src]
        onsets = roll.copy()
        onsets[1:] &= ~roll[:-1]  # a held run starts where the previous frame was silent
        return out, int(onsets.sum() - onsets[:, src].sum())
    notes = [Note(*n) for n in x]
    moved = [Note(p + s, a, b) for p, a, b in notes]
    kept = [n for n in moved if LOWEST_PITCH <= n.pitch <= HIGHEST_PITCH]
    return kept, len(moved) - len(kept)


def shift_to_c(key: Key | int) -> int:
    """Semitones in −5..+6 that move ``key``'s tonic (a Key or a pitch class) to C, nearest."""
    pc = key.tonic_pc if isinstance(key, Key) else int(key)
    s = (-pc) % 12
    return s - 12 if s > 6 else s


def transpose_to_c(x: np.ndarray | Sequence[Note], key: Key | None = None) -> Transposed:
    """Move a roll (or notes) to C major / C minor by the nearest shift in −5..+6 semitones.

    ``key`` defaults to :func:`estimate_key` on the input. Returns ``Transposed(value, shift,
    dropped)``; the mode is kept (a minor piece lands in C minor), as in the benchmark datasets.
    """
    if key is None:
        roll = x if isinstance(x, np.ndarray) else roll_from_notes(list(x))
        key = estimate_key(roll)
    shift = shift_to_c(key)
    value, dropped = transpose(x, shift)
    return Transposed(value, shift, dropped)


# ---------------------------------------------------------------------------------------------
# Key estimation (Krumhansl–Schmuckler)


def pitch_class_histogram(roll: np.ndarray) -> np.ndarray:
    """``(12,)`` duration-weighted histogram: frames sounded per pitch class (0 = C)."""
    per_key = check_roll(roll).sum(axis=0, dtype=np.float64)
    pcs = (np.arange(N_KEYS) + LOWEST_PITCH) % 12
    return np.bincount(pcs, weights=per_key, minlength=12)


def _profiles() -> np.ndarray:
    """``(24, 12)``: row ``m·12 + tonic`` is the profile of that key indexed by pitch class."""
    idx = (np.arange(12)[None, :] - np.arange(12)[:, None]) % 12  # [tonic, pc] → degree
    return np.concatenate([KK_MAJOR[idx], KK_MINOR[idx]])


def key_correlations(histogram: np.ndarray) -> np.ndarray:
    """Pearson correlation of a ``(12,)`` pitch-class histogram with all 24 key profiles.

    Returns ``(24,)``: indices 0..11 major keys on C..B, 12..23 minor keys on C..B.
    """
    h = np.asarray(histogram, dtype=np.float64)
    if h.shape != (12,) or not np.isfinite(h).all() or (h < 0).any():
        raise InputError(
            error_message(
                "histogram",
                "12 finite non-negative weights (C, C#, …, B)",
                f"shape {h.shape}, min {h.min() if h.size else 'n/a'}",
                "pass pitch_class_histogram(roll)",
            )
        )
    hc = h - h.mean()
    if not np.any(hc):
        raise InputError(
            error_message(
                "histogram",
                "a pitch-class histogram with some notes and not all classes equal",
                "an empty or flat histogram (no key can be told)",
                "estimate the key on a piece with notes, or give the key explicitly",
            )
        )
    p = _profiles()
    pc = p - p.mean(axis=1, keepdims=True)
    return (pc @ hc) / (np.linalg.norm(pc, axis=1) * np.linalg.norm(hc))


def estimate_key(x: np.ndarray) -> Key:
    """Krumhansl–Schmuckler key of a ``(T, 88)`` roll or a ``(12,)`` pitch-class histogram.

    Ties go to the first key in the order C major … B major, C minor … B minor.
    """
    arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    hist = arr if arr.shape == (12,) else pitch_class_histogram(arr)
    r = key_correlations(hist)
    best = int(np.argmax(r))
    return Key(best % 12, "major" if best < 12 else "minor", float(r[best]))
