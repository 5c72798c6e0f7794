"""Piano-roll conversions, quantisation rule, transposition and Krumhansl–Schmuckler keys."""

from __future__ import annotations

import numpy as np
import pytest

from rnnrbm.music.pianoroll import (
    KK_MAJOR,
    KK_MINOR,
    Key,
    Note,
    check_roll,
    estimate_key,
    key_correlations,
    notes_to_roll,
    pitch_class_histogram,
    quantise,
    roll_from_notes,
    roll_to_frames,
    roll_to_notes,
    shift_to_c,
    transpose,
    transpose_to_c,
)
from rnnrbm.validation import InputError, InputTypeError


def random_roll(seed: int, t: int = 40, density: float = 0.15) -> np.ndarray:
    return np.random.default_rng(seed).random((t, 88)) < density


def chord_roll(chords: list[list[int]], frames_each: int = 2) -> np.ndarray:
    """A roll holding each chord (MIDI pitches) for ``frames_each`` frames."""
    return notes_to_roll([c for c in chords for _ in range(frames_each)])


# --- conversions -----------------------------------------------------------------------------


def test_notes_to_roll_exact_and_inverse():
    frames = [[60, 64, 67], [], [21], [108, 21], [60]]
    roll = notes_to_roll(frames)
    assert roll.shape == (5, 88) and roll.dtype == bool
    assert roll.sum() == 7
    assert roll[0, [39, 43, 46]].all() and roll[2, 0] and roll[3, 87] and roll[3, 0]
    assert roll_to_frames(roll) == [[60, 64, 67], [], [21], [21, 108], [60]]
    assert notes_to_roll([]).shape == (0, 88) and roll_to_frames(notes_to_roll([])) == []


def test_roll_to_frames_random_round_trip():
    roll = random_roll(0)
    assert np.array_equal(notes_to_roll(roll_to_frames(roll)), roll)
    assert np.array_equal(notes_to_roll(roll_to_frames(roll.astype(np.uint8))), roll)


def test_notes_to_roll_rejects_out_of_range_pitch():
    with pytest.raises(
        InputError, match=r"frames: expected MIDI notes in 21\.\.108.*note 20 in frame 1"
    ):
        notes_to_roll([[60], [20]])


def test_check_roll_errors():
    with pytest.raises(InputError, match=r"roll: expected shape \(T, 88\).*\(4, 87\)"):
        check_roll(np.zeros((4, 87)))
    with pytest.raises(InputError, match=r"binary values.*frame 1, column 2"):
        bad = np.zeros((3, 88))
        bad[1, 2] = 0.5
        check_roll(bad)
    with pytest.raises(InputTypeError, match="numpy array"):
        check_roll([[0] * 88])


def test_roll_to_notes_merges_held_frames():
    roll = np.zeros((6, 88), dtype=np.uint8)
    roll[0:3, 39] = 1  # C4 held 3 frames
    roll[4:6, 39] = 1  # re-struck after a rest: a second note
    roll[1, 0] = 1  # A0, one frame
    roll[2:6, 87] = 1  # C8 to the end
    assert roll_to_notes(roll) == [
        Note(60, 0, 3),
        Note(21, 1, 2),
        Note(108, 2, 6),
        Note(60, 4, 6),
    ]
    assert roll_to_notes(np.zeros((0, 88))) == []


def test_roll_from_notes_inverts_roll_to_notes():
    roll = random_roll(1, density=0.3)
    notes = roll_to_notes(roll)
    assert np.array_equal(roll_from_notes(notes, len(roll)), roll)
    as_array = np.array([tuple(n) for n in notes])
    assert np.array_equal(roll_from_notes(as_array, len(roll)), roll)
    # Default length = last note end; overlapping notes of one pitch merge.
    merged = roll_from_notes([Note(60, 0, 3), Note(60, 2, 5)])
    assert merged.shape == (5, 88) and merged[:, 39].all() and merged.sum() == 5
    with pytest.raises(InputError, match="transpose"):
        roll_from_notes([Note(110, 0, 1)])


# --- quantisation rule -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("on", "off", "expected"),
    [
        (0.0, 1.0, (0, 1)),  # exactly one frame
        (0.0, 3.0, (0, 3)),
        (0.9, 2.9, (1, 3)),  # slightly late onset / early end snap to the nearest grid
        (-0.0, 2.6, (0, 3)),  # covers 0.6 of frame 2: > half → on
        (0.4, 1.4, (0, 1)),  # 0.6 of frame 0, 0.4 of frame 1
        (0.5, 1.5, (1, 2)),  # exactly half each: no frame > half → midpoint frame (1)
        (2.0, 2.125, (2, 3)),  # a 32nd at a frame start: not lost
        (2.6, 2.7, (2, 3)),  # short note late in a frame: the frame of its midpoint
        (2.95, 3.1, (3, 4)),  # straddles a boundary, more of it in frame 3
        (3.0, 3.0, (3, 4)),  # zero length still lands somewhere
        (7.5, 9.0, (7, 8)),  # past the grid: clipped to the last frame
    ],
)
def test_quantise_rule_on_uniform_grid(on, off, expected):
    start, end = quantise(np.array([on]), np.array([off]), np.arange(9.0))
    assert (int(start[0]), int(end[0])) == expected


def test_quantise_uses_each_frames_own_width():
    # Frames of widths 1, 1, 4, 4: a note covering 1.5 of the wide frame 2 is < half of it.
    grid = np.array([0.0, 1.0, 2.0, 6.0, 10.0])
    start, end = quantise(np.array([0.0, 0.0, 1.5]), np.array([3.5, 4.5, 1.9]), grid)
    assert start.tolist() == [0, 0, 1] and end.tolist() == [2, 3, 2]


# --- transposition ---------------------------------------------------------------------------


def test_transpose_roll_counts_dropped_runs():
    roll = np.zeros((4, 88), dtype=bool)
    roll[0:2, 86] = True  # B7: one held note
    roll[3, 86] = True  # second B7 note
    roll[1, 40] = True
    up, dropped = transpose(roll, 2)  # B7 + 2 = C#8 > C8: both B7 notes leave
    assert dropped == 2
    assert up[1, 42] and up.sum() == 1
    down, dropped = transpose(roll, -3)
    assert dropped == 0 and np.array_equal(down[:, 83], roll[:, 86]) and down[1, 37]
    gone, dropped = transpose(roll, 100)
    assert dropped == 3 and not gone.any()
    gone, dropped = transpose(roll, -100)
    assert dropped == 3 and not gone.any()


def test_transpose_notes_matches_roll_version():
    roll = random_roll(2)
    for s in (-7, -1, 0, 5, 11):
        rolled, d_roll = transpose(roll, s)
        notes, d_notes = transpose(roll_to_notes(roll), s)
        assert d_roll == d_notes
        assert np.array_equal(roll_from_notes(notes, len(roll)), rolled)


def test_shift_to_c_range_and_nearest():
    shifts = [shift_to_c(pc) for pc in range(12)]
    assert all(-5 <= s <= 6 for s in shifts)
    assert all((pc + s) % 12 == 0 for pc, s in enumerate(shifts))
    assert shifts == [0, -1, -2, -3, -4, -5, 6, 5, 4, 3, 2, 1]
    assert shift_to_c(Key(2, "major", 0.9)) == -2


def test_transpose_to_c_with_given_and_estimated_key():
    d_major = chord_roll([[62, 66, 69], [67, 71, 74], [69, 73, 76], [62, 66, 69]])
    res = transpose_to_c(d_major, Key(2, "major", float("nan")))
    assert res.shift == -2 and res.dropped == 0
    assert np.array_equal(res.value, transpose(d_major, -2)[0])
    est = transpose_to_c(d_major)  # estimated: D major too
    assert est.shift == -2 and np.array_equal(est.value, res.value)
    notes = transpose_to_c(roll_to_notes(d_major))
    assert notes.shift == -2 and notes.value == roll_to_notes(res.value)


# --- Krumhansl–Schmuckler ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["major", "minor"])
def test_rotated_profile_is_its_own_key(mode):
    profile = KK_MAJOR if mode == "major" else KK_MINOR
    for tonic in range(12):
        hist = np.roll(profile, tonic)  # hist[pc] = profile[(pc - tonic) % 12]
        key = estimate_key(hist)
        assert (key.tonic_pc, key.mode) == (tonic, mode)
        assert key.correlation == pytest.approx(1.0)


def test_key_correlations_match_numpy_pearson():
    hist = np.random.default_rng(3).random(12)
    r = key_correlations(hist)
    for k in range(24):
        prof = np.roll(KK_MAJOR if k < 12 else KK_MINOR, k % 12)
        assert r[k] == pytest.approx(np.corrcoef(hist, prof)[0, 1])


def test_estimate_key_on_progressions():
    # G major: I–IV–V7–I with a G-major scale run.
    g_major = chord_roll(
        [[55, 59, 62], [60, 64, 67], [62, 66, 69, 72], [55, 59, 62]]
        + [[p] for p in (67, 69, 71, 72, 74, 76, 78, 79)],
        frames_each=2,
    )
    key = estimate_key(g_major)
    assert (key.tonic_pc, key.mode, key.name) == (7, "major", "G major")
    # E minor (harmonic): i–iv–V–i with the raised leading tone D#.
    e_minor = chord_roll([[52, 55, 59], [57, 60, 64], [59, 63, 66], [52, 55, 59], [64]])
    key = estimate_key(e_minor)
    assert (key.tonic_pc, key.mode) == (4, "minor") and key.name == "E minor"
    assert transpose_to_c(e_minor).shift == -4


def test_pitch_class_histogram_is_duration_weighted():
    roll = notes_to_roll([[60, 72], [60], [61], []])  # C sounds 3 frames (two octaves), C# one
    assert pitch_class_histogram(roll).tolist() == [3.0, 1.0] + [0.0] * 10


def test_estimate_key_needs_notes():
    with pytest.raises(InputError, match="empty or flat histogram"):
        estimate_key(np.zeros((5, 88), dtype=bool))
    with pytest.raises(InputError, match="empty or flat histogram"):
        estimate_key(np.ones(12))
    with pytest.raises(InputError, match="12 finite non-negative"):
        key_correlations(np.full(12, -1.0))
