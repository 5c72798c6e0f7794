"""Sample-quality statistics of piano rolls: does generated music resemble the data?

Each statistic follows the conventions of MusPy (Dong et al. 2020, "MusPy: a toolkit for symbolic
music generation", §4 metrics) adapted to binary ``(T, 88)`` rolls, where a *note* is a maximal
run of consecutive sounding frames of one key (a roll cannot tell a held note from a repeated
one). Over several pieces, frames and notes are pooled (flat), as the likelihood protocol pools
frames.

- ``polyphony``: mean number of sounding keys per non-empty frame (notes).
- ``empty_frame_rate``: share of frames in which no key sounds.
- ``pitch_range``: highest minus lowest sounding MIDI pitch (semitones), with both ends.
- ``pitch_class_entropy``: entropy of the 12-bin pitch-class histogram of the notes (bits; 0 for
  one pitch class, log2 12 ≈ 3.585 for all equally often).
- ``scale_consistency``: the largest share of notes that lie in one major or natural-minor scale
  (24 candidates), with that scale's name.
- ``mean_note_length``: mean note length (frames).
- ``held_from_previous``: share of sounding (key, frame) pairs, after a piece's first frame, whose
  key also sounds in the previous frame (the note is held or repeated from it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from rnnrbm.music.pianoroll import LOWEST_PITCH, N_KEYS, PITCH_CLASS_NAMES, check_roll

__all__ = ["UNITS", "roll_statistics"]

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)  # natural minor
UNITS = {
    "polyphony": "notes per non-empty frame",
    "empty_frame_rate": "share of frames",
    "pitch_range": "semitones",
    "pitch_class_entropy": "bits",
    "scale_consistency": "share of notes",
    "mean_note_length": "frames",
    "held_from_previous": "share of sounding key-frames after the first frame",
}


def _onsets(roll: np.ndarray) -> np.ndarray:
    """``(T, keys)`` bool: where a note starts (sounding now, silent in the previous frame)."""
    before = np.zeros_like(roll)
    before[1:] = roll[:-1]
    return roll & ~before


def roll_statistics(rolls: np.ndarray | Sequence[np.ndarray]) -> dict[str, Any]:
    """The statistics of the module doc for one roll ``(T, 88)`` or several, pooled; a JSON-able
    dict with ``units`` and the counts behind them (``frames``, ``notes``)."""
    pieces = [check_roll(r, "roll") for r in ([rolls] if _is_one_roll(rolls) else rolls)]
    frames = sum(len(r) for r in pieces)
    sounding = np.concatenate([r.sum(1) for r in pieces]) if pieces else np.zeros(0)
    onsets = sum((_onsets(r).sum(0) for r in pieces), np.zeros(N_KEYS, dtype=np.int64))
    active = sum((r.sum(0) for r in pieces), np.zeros(N_KEYS, dtype=np.int64))
    held = sum(int((r[1:] & r[:-1]).sum()) for r in pieces)
    after_first = sum(int(r[1:].sum()) for r in pieces)
    notes = int(onsets.sum())
    keys = np.flatnonzero(active)
    pitch_classes = np.bincount(
        (np.arange(N_KEYS) + LOWEST_PITCH) % 12, weights=onsets, minlength=12
    )
    non_empty = sounding[sounding > 0]
    scale, share = _best_scale(pitch_classes)
    return {
        "frames": frames,
        "notes": notes,
        "polyphony": float(non_empty.mean()) if non_empty.size else 0.0,
        "empty_frame_rate": float((sounding == 0).mean()) if frames else 0.0,
        "pitch_range": int(keys[-1] - keys[0]) if keys.size else 0,
        "lowest_pitch": int(keys[0] + LOWEST_PITCH) if keys.size else None,
        "highest_pitch": int(keys[-1] + LOWEST_PITCH) if keys.size else None,
        "pitch_class_entropy": _entropy_bits(pitch_classes),
        "scale_consistency": share,
        "best_scale": scale,
        "mean_note_length": float(active.sum() / notes) if notes else 0.0,
        "held_from_previous": held / after_first if after_first else 0.0,
        "units": UNITS,
    }


def _is_one_roll(rolls: Any) -> bool:
    return isinstance(rolls, np.ndarray) and rolls.ndim == 2


def _entropy_bits(counts: np.ndarray) -> float:
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0: no "-0.0" for one class


def _best_scale(pitch_classes: np.ndarray) -> tuple[str | None, float]:
    """The major / natural-minor scale holding the largest share of the notes, and that share."""
    total = pitch_classes.sum()
    if total == 0:
        return None, 0.0
    best, best_share = "", -math.inf
    for tonic in range(12):
        for mode, steps in (("major", MAJOR), ("minor", MINOR)):
            share = pitch_classes[[(tonic + s) % 12 for s in steps]].sum() / total
            if share > best_share + 1e-12:
                best, best_share = f"{PITCH_CLASS_NAMES[tonic]} {mode}", float(share)
    return best, best_share
