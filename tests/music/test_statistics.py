"""Sample-quality statistics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnnrbm.music.pianoroll import LOWEST_PITCH
from rnnrbm.music.statistics import roll_statistics


def _roll(frames: list[list[int]]) -> np.ndarray:
    """A roll from lists of MIDI pitches per frame."""
    roll = np.zeros((len(frames), 88), dtype=bool)
    for t, pitches in enumerate(frames):
        roll[t, [p - LOWEST_PITCH for p in pitches]] = True
    return roll


def test_a_hand_computed_piece() -> None:
    # C4 held 3 frames; E4 + G4 in frames 0-1; a rest; then A4 alone, then C4 again.
    roll = _roll([[60, 64, 67], [60, 64, 67], [60], [], [69], [60]])
    s = roll_statistics(roll)
    assert s["frames"] == 6 and s["notes"] == 5  # C4 ×2, E4, G4, A4
    assert s["polyphony"] == pytest.approx((3 + 3 + 1 + 1 + 1) / 5)
    assert s["empty_frame_rate"] == pytest.approx(1 / 6)
    assert (s["pitch_range"], s["lowest_pitch"], s["highest_pitch"]) == (9, 60, 69)
    # Pitch classes of the notes: C ×2, E, G, A → p = (2, 1, 1, 1) / 5.
    p = np.array([2, 1, 1, 1]) / 5
    assert s["pitch_class_entropy"] == pytest.approx(float(-(p * np.log2(p)).sum()))
    assert s["scale_consistency"] == 1.0 and s["best_scale"] == "C major"  # first of the ties
    assert s["mean_note_length"] == pytest.approx(9 / 5)  # 9 sounding key-frames, 5 notes
    # Sounding key-frames after frame 0: 3 + 1 + 0 + 1 + 1 = 6; held from the previous frame:
    # all three in frame 1, C4 in frame 2 → 4.
    assert s["held_from_previous"] == pytest.approx(4 / 6)
    assert s["units"]["pitch_class_entropy"] == "bits"


def test_pieces_are_pooled_and_a_note_does_not_run_across_pieces() -> None:
    a, b = _roll([[60], [60]]), _roll([[60], [61]])
    s = roll_statistics([a, b])
    assert s["frames"] == 4 and s["notes"] == 3  # C4 (held), C4, C#4
    assert s["held_from_previous"] == pytest.approx(1 / 2)  # a: held; b: C#4 is new
    assert s["mean_note_length"] == pytest.approx(4 / 3)
    # Pitch classes C ×2, C# ×1: C# major (C#, D#, F, F#, G#, A#, B#=C) holds all three notes.
    assert s["scale_consistency"] == 1.0
    assert s["pitch_class_entropy"] == pytest.approx(
        -(2 / 3) * math.log2(2 / 3) - math.log2(1 / 3) / 3
    )


def test_scale_consistency_of_a_chromatic_run_and_entropy_bounds() -> None:
    chromatic = _roll([[60 + i] for i in range(12)])
    s = roll_statistics(chromatic)
    assert s["pitch_class_entropy"] == pytest.approx(math.log2(12))
    assert s["scale_consistency"] == pytest.approx(7 / 12)
    one = roll_statistics(_roll([[62], [74]]))  # D4 then D5: one pitch class
    assert one["pitch_class_entropy"] == 0.0 and one["pitch_range"] == 12


def test_an_empty_roll() -> None:
    s = roll_statistics(np.zeros((4, 88), dtype=bool))
    assert s["notes"] == 0 and s["empty_frame_rate"] == 1.0 and s["polyphony"] == 0.0
    assert s["best_scale"] is None and s["lowest_pitch"] is None
