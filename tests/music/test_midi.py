"""MIDI → roll (exact expected rolls), roll → MIDI → roll, keys, and corrupt-file handling.

Every file is built here with mido at exact ticks; positions below are in beats (quarter notes).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import mido
import numpy as np
import pytest

from rnnrbm.music.midi import (
    MidiBounds,
    MidiFileError,
    MidiReadOptions,
    is_midi_path,
    read_midi,
    read_midi_folder,
    roll_to_midi,
)
from rnnrbm.music.pianoroll import notes_to_roll, transpose
from rnnrbm.validation import DataFormatError, InputError

TPB = 480


def write_midi(
    path: Path,
    notes=(),
    *,
    tempos=((0, 120),),
    time_sigs=(),
    key=None,
    drums=(),
    cc=(),
    tpb=TPB,
    tempo_on_note_track=False,
) -> Path:
    """Type-1 file: track 0 = tempo/meter/key, track 1 = piano (ch 0), track 2 = drums (ch 9).

    ``notes``/``drums``: (pitch, start_beat, end_beat); ``tempos``: (beat, bpm); ``time_sigs``:
    (beat, numerator, denominator); ``cc``: (beat, controller, value) on channel 0.
    """

    def track(events):  # (tick, order, message) → delta-timed MidiTrack
        out, now = mido.MidiTrack(), 0
        for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
            out.append(msg.copy(time=tick - now))
            now = tick
        return out

    def tick(beat):
        return round(beat * tpb)

    meta = [
        (tick(b), 0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))) for b, bpm in tempos
    ]
    meta += [
        (tick(b), 0, mido.MetaMessage("time_signature", numerator=n, denominator=d))
        for b, n, d in time_sigs
    ]
    if key is not None:
        meta.append((0, 0, mido.MetaMessage("key_signature", key=key)))

    def voice(ns, channel):
        ev = []
        for pitch, a, b in ns:
            ev.append(
                (tick(a), 2, mido.Message("note_on", note=pitch, velocity=90, channel=channel))
            )
            ev.append((tick(b), 1, mido.Message("note_off", note=pitch, channel=channel)))
        return ev

    piano = voice(notes, 0) + [
        (tick(b), 0, mido.Message("control_change", control=c, value=v, channel=0))
        for b, c, v in cc
    ]
    if tempo_on_note_track:
        piano.append((0, 0, mido.MetaMessage("set_tempo", tempo=600000)))
    mid = mido.MidiFile(type=1, ticks_per_beat=tpb)
    mid.tracks += [track(meta), track(piano)]
    if drums:
        mid.tracks.append(track(voice(drums, 9)))
    mid.save(str(path))
    return path


def expected_roll(n_frames: int, notes, fpb: int = 2) -> np.ndarray:
    """Roll with each (pitch, start_beat, end_beat) on frames [start·fpb, end·fpb)."""
    roll = np.zeros((n_frames, 88), dtype=bool)
    for pitch, a, b in notes:
        roll[round(a * fpb) : round(b * fpb), pitch - 21] = True
    return roll


# --- reading: exact rolls --------------------------------------------------------------------


def test_simple_notes_at_120_bpm(tmp_path):
    notes = [(60, 0, 1), (64, 1, 2.5), (67, 2, 4), (72, 3.5, 4)]
    m = read_midi(write_midi(tmp_path / "simple.mid", notes))
    assert m.roll.dtype == bool and m.frames_per_beat == 2
    assert np.array_equal(m.roll, expected_roll(8, notes))
    assert np.allclose(m.frame_times, np.arange(9) * 0.25)
    assert m.dropped_out_of_range == 0 and m.transposition == 0 and m.warnings == ()
    assert m.source == tmp_path / "simple.mid"
    one = read_midi(tmp_path / "simple.mid", MidiReadOptions(frames_per_beat=1))
    # One frame per beat: E4 covers exactly half of frame 2 (not more) → frame 1 only; C5 covers
    # half of frame 3 and nothing else → the frame of its midpoint.
    want = expected_roll(4, [(60, 0, 1), (64, 1, 2), (67, 2, 4), (72, 3, 4)], fpb=1)
    assert np.array_equal(one.roll, want)


def test_tempo_changes_keep_frames_on_beats(tmp_path):
    # 120 bpm for 2 beats, 60 bpm for 2 beats, then 240 bpm: a fixed-seconds grid would smear.
    notes = [(60, 0, 1), (62, 1.5, 2.5), (64, 2, 4), (65, 4, 4.5), (67, 5, 6)]
    path = write_midi(tmp_path / "tempo.mid", notes, tempos=[(0, 120), (2, 60), (4, 240)])
    for beat in ("meter", "quarter"):
        m = read_midi(path, MidiReadOptions(beat=beat))
        assert np.array_equal(m.roll, expected_roll(12, notes)), beat
        widths = np.diff(m.frame_times)
        assert np.allclose(widths, [0.25] * 4 + [0.5] * 4 + [0.125] * 4), beat


def test_time_signature_change_3_4_to_4_4_follows_beats(tmp_path):
    notes = [(60, 0, 3), (64, 1, 1.5), (67, 2.5, 3), (62, 3, 7), (65, 6, 7)]
    path = write_midi(
        tmp_path / "meter.mid", notes, tempos=[(0, 90)], time_sigs=[(0, 3, 4), (3, 4, 4)]
    )
    m = read_midi(path)
    assert np.array_equal(m.roll, expected_roll(14, notes))
    assert np.allclose(np.diff(m.frame_times), 60 / 90 / 2)


def test_compound_meter_beat_is_dotted_quarter(tmp_path):
    # 6/8: pretty_midi's beat is the dotted quarter, so 3 frames per beat = eighth notes; the
    # "quarter" beat with 2 frames per beat gives the same eighth-note grid.
    eighths = [(60 + i, i / 2, (i + 1) / 2) for i in range(6)] + [(48, 0, 3)]
    path = write_midi(tmp_path / "jig.mid", eighths, time_sigs=[(0, 6, 8)])
    meter = read_midi(path, MidiReadOptions(frames_per_beat=3))
    quarter = read_midi(path, MidiReadOptions(frames_per_beat=2, beat="quarter"))
    want = expected_roll(6, eighths, fpb=2)
    assert np.array_equal(meter.roll, want) and np.array_equal(quarter.roll, want)


def test_drums_dropped_by_default_and_kept_when_asked(tmp_path):
    notes = [(60, 0, 2)]
    drums = [(36, 0, 0.5), (42, 1, 1.5), (38, 3, 3.5)]  # the last hit outlasts the piano
    path = write_midi(tmp_path / "drums.mid", notes, drums=drums)
    m = read_midi(path)
    assert np.array_equal(m.roll, expected_roll(4, notes))
    kept = read_midi(path, MidiReadOptions(drop_drums=False))
    assert np.array_equal(kept.roll, expected_roll(7, notes + drums))


def test_sustain_pedal_extends_notes_only_when_asked(tmp_path):
    notes = [(60, 0, 1), (64, 0, 0.5), (67, 3.5, 4)]
    pedal = [(0.75, 64, 127), (3, 64, 0)]  # down after E4 ended, up at beat 3
    path = write_midi(tmp_path / "pedal.mid", notes, cc=pedal)
    plain = read_midi(path)
    assert np.array_equal(plain.roll, expected_roll(8, notes))
    held = read_midi(path, MidiReadOptions(apply_sustain=True))
    assert np.array_equal(held.roll, expected_roll(8, [(60, 0, 3), (64, 0, 0.5), (67, 3.5, 4)]))


def test_pedal_never_lifted_holds_to_the_end(tmp_path):
    path = write_midi(tmp_path / "held.mid", [(60, 0, 1), (62, 3, 4)], cc=[(0.5, 64, 100)])
    held = read_midi(path, MidiReadOptions(apply_sustain=True))
    assert np.array_equal(held.roll, expected_roll(8, [(60, 0, 4), (62, 3, 4)]))


def test_out_of_range_notes_dropped_and_counted(tmp_path):
    notes = [(20, 0, 1), (21, 0, 1), (108, 1, 2), (109, 1, 2), (0, 0, 2), (127, 0, 2)]
    m = read_midi(write_midi(tmp_path / "range.mid", notes))
    assert m.dropped_out_of_range == 4
    assert np.array_equal(m.roll, expected_roll(4, [(21, 0, 1), (108, 1, 2)]))


def test_short_and_off_grid_notes(tmp_path):
    notes = [
        (60, 0.5, 0.5 + 1 / 8),  # a 32nd at a frame start
        (62, 1.6, 1.6 + 1 / 16),  # a 64th late in frame 3 (3.2 .. 3.325 in frames)
        (64, 0.45, 1.5),  # onset 0.1 frame early: snaps to frame 1, not frame 0
        (65, 2, 2.2),  # 0.4 of a frame: kept in its frame
    ]
    m = read_midi(write_midi(tmp_path / "short.mid", notes))
    want = np.zeros((5, 88), dtype=bool)
    want[1, 60 - 21] = want[3, 62 - 21] = want[4, 65 - 21] = True
    want[1:3, 64 - 21] = True
    assert np.array_equal(m.roll, want)


def test_library_warnings_are_recorded_not_raised(tmp_path):
    # A tempo event outside track 0 makes pretty_midi warn; with filterwarnings=error this test
    # would fail if the warning escaped read_midi.
    m = read_midi(write_midi(tmp_path / "warn.mid", [(60, 0, 1)], tempo_on_note_track=True))
    assert any("non-zero tracks" in w for w in m.warnings)
    assert np.array_equal(m.roll, expected_roll(2, [(60, 0, 1)]))


# --- keys and transposition ------------------------------------------------------------------

D_MAJOR = [(62, 0, 1), (66, 0, 1), (69, 0, 1), (67, 1, 2), (71, 1, 2), (74, 1, 2)]
D_MAJOR += [(69, 2, 3), (73, 2, 3), (76, 2, 3), (62, 3, 4), (66, 3, 4), (69, 3, 4)]


def test_key_signature_sets_the_shift(tmp_path):
    path = write_midi(tmp_path / "d.mid", D_MAJOR, key="D")
    raw = read_midi(path)
    assert raw.key is not None and (raw.key.tonic_pc, raw.key.mode) == (2, "major")
    assert raw.key_source == "signature" and raw.transposition == 0
    assert raw.key.correlation > 0.6  # the notes agree with the signature
    m = read_midi(path, MidiReadOptions(transpose_to_c=True))
    assert m.transposition == -2 and m.dropped_out_of_range == 0
    assert np.array_equal(m.roll, transpose(raw.roll, -2)[0])
    # A (wrong) signature wins over the notes; "estimate" ignores it.
    lie = write_midi(tmp_path / "lie.mid", D_MAJOR, key="Bb")
    assert read_midi(lie, MidiReadOptions(transpose_to_c=True)).transposition == 2
    est = read_midi(lie, MidiReadOptions(transpose_to_c=True, key_from="estimate"))
    assert est.key_source == "estimate" and est.transposition == -2


def test_minor_signature(tmp_path):
    m = read_midi(write_midi(tmp_path / "fm.mid", [(65, 0, 1), (68, 0, 1)], key="F#m"))
    assert (m.key.tonic_pc, m.key.mode) == (6, "minor")
    assert read_midi(m.source, MidiReadOptions(transpose_to_c=True)).transposition == 6


def test_estimated_key_without_signature(tmp_path):
    # A minor: i–iv–V–i with G#, then a melody on the tonic.
    a_minor = [(57, 0, 1), (60, 0, 1), (64, 0, 1), (62, 1, 2), (65, 1, 2), (69, 1, 2)]
    a_minor += [(64, 2, 3), (68, 2, 3), (71, 2, 3), (57, 3, 4), (60, 3, 4), (64, 3, 4)]
    path = write_midi(tmp_path / "am.mid", a_minor)
    m = read_midi(path, MidiReadOptions(transpose_to_c=True))
    assert m.key_source == "estimate" and (m.key.tonic_pc, m.key.mode) == (9, "minor")
    assert m.transposition == 3 and m.key.correlation > 0.7
    assert np.array_equal(m.roll, transpose(read_midi(path).roll, 3)[0])
    assert read_midi(path, MidiReadOptions(key_from="signature")).key is None


def test_transposition_drops_notes_pushed_out(tmp_path):
    # B major (shift +1 to C) with a note on C8: it leaves the piano and is counted.
    path = write_midi(tmp_path / "b.mid", [(71, 0, 1), (108, 0, 1)], key="B")
    m = read_midi(path, MidiReadOptions(transpose_to_c=True))
    assert m.transposition == 1 and m.dropped_out_of_range == 1 and m.roll.sum() == 2


def test_empty_file_has_no_key(tmp_path):
    path = write_midi(tmp_path / "empty.mid", [])
    m = read_midi(path, MidiReadOptions(transpose_to_c=True))
    assert m.roll.shape == (0, 88) and m.key is None and m.key_source == "none"


# --- round trip ------------------------------------------------------------------------------


@pytest.mark.parametrize(("fpb", "bpm"), [(1, 120.0), (2, 97.0), (3, 60.0), (4, 183.5)])
def test_roll_midi_roll_round_trip_is_exact(tmp_path, fpb, bpm):
    rng = np.random.default_rng(fpb)
    roll = rng.random((60, 88)) < 0.12
    roll[:2] = False  # leading and trailing silence survive too
    roll[-3:] = False
    path = roll_to_midi(roll, tmp_path / "rt.mid", frames_per_beat=fpb, tempo_bpm=bpm)
    back = read_midi(path, MidiReadOptions(frames_per_beat=fpb))
    assert np.array_equal(back.roll, roll)
    assert back.dropped_out_of_range == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rt.mid"]  # no temp file left


def test_round_trip_edge_rolls(tmp_path):
    full = np.ones((5, 88), dtype=np.uint8)
    assert np.array_equal(read_midi(roll_to_midi(full, tmp_path / "f.mid")).roll, full == 1)
    silent = np.zeros((7, 88), dtype=bool)
    assert np.array_equal(read_midi(roll_to_midi(silent, tmp_path / "s.mid")).roll, silent)
    nothing = np.zeros((0, 88), dtype=bool)
    assert read_midi(roll_to_midi(nothing, tmp_path / "n.mid")).roll.shape == (0, 88)


def test_roll_to_midi_writes_one_note_per_held_run(tmp_path):
    roll = notes_to_roll([[60], [60], [], [60, 64]])
    mid = mido.MidiFile(str(roll_to_midi(roll, tmp_path / "n.mid", velocity=33, program=5)))
    ons = [m for t in mid.tracks for m in t if m.type == "note_on" and m.velocity > 0]
    assert [(m.note, m.velocity) for m in ons] == [(60, 33), (60, 33), (64, 33)]
    assert [m.program for t in mid.tracks for m in t if m.type == "program_change"] == [5]
    with pytest.raises(InputError, match="velocity"):
        roll_to_midi(roll, tmp_path / "x.mid", velocity=0)


# --- corrupt inputs --------------------------------------------------------------------------


def valid_bytes(tmp_path: Path) -> bytes:
    return write_midi(tmp_path / "ok.mid", [(60, 0, 1), (64, 1, 2)]).read_bytes()


def patched(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new) :]


CORRUPT = {
    "zero_byte": lambda d: b"",
    "truncated_in_header": lambda d: d[:10],
    "truncated_in_track": lambda d: d[:30],
    "truncated_last_bytes": lambda d: d[:-3],
    "text_renamed": lambda d: b"This is not a MIDI file, just some notes: C E G.\n" * 3,
    "riff_wrapper": lambda d: b"RIFF" + d,
    "ticks_per_beat_zero": lambda d: patched(d, 12, b"\x00\x00"),
    "smpte_division": lambda d: patched(d, 12, b"\xe7\x28"),
    "huge_track_count": lambda d: patched(d, 10, b"\xff\xff"),
    "format_7": lambda d: patched(d, 8, b"\x00\x07"),
    "gigabyte_track_length": lambda d: patched(d, 18, struct.pack(">L", 2**31)),
    "undefined_status_byte": lambda d: garbled_track(d, b"\x00\xf4"),
    "running_status_without_status": lambda d: garbled_track(d, b"\x00\x40"),
    "data_byte_over_127": lambda d: garbled_track(d, b"\x00\x90\x80\x40"),
}


def garbled_track(data: bytes, pattern: bytes) -> bytes:
    """Keep the chunk table intact but fill the second track's events with ``pattern``."""
    (len0,) = struct.unpack(">L", data[18:22])
    at = 22 + len0 + 8  # first byte of the second track's events
    (len1,) = struct.unpack(">L", data[at - 4 : at])
    body = (pattern * len1)[:len1]
    return data[:at] + body + data[at + len1 :]


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_files_raise_midi_file_error_naming_the_file(tmp_path, case):
    bad = tmp_path / f"broken_{case}.mid"
    bad.write_bytes(CORRUPT[case](valid_bytes(tmp_path)))
    with pytest.raises(MidiFileError, match=re.escape(bad.name)) as info:
        read_midi(bad)
    assert isinstance(info.value, DataFormatError) and "Fix:" in str(info.value)


def test_corrupt_messages_say_what_is_wrong(tmp_path):
    d = valid_bytes(tmp_path)
    cases = {
        "empty.mid": (b"", "empty file"),
        "txt.mid": (b"hello world, this is text\n", "starting with b'MThd'"),
        "tpb.mid": (patched(d, 12, b"\x00\x00"), "ticks per beat.*got 0"),
        "smpte.mid": (patched(d, 12, b"\xe7\x28"), "SMPTE"),
        "giga.mid": (patched(d, 18, struct.pack(">L", 2**31)), "declared length of 2147483648"),
        "cut.mid": (d[:-3], "truncated"),
        "head.mid": (d[:10], "14-byte MThd header, got only 10 bytes"),
        "status.mid": (garbled_track(d, b"\x00\xf4"), "OSError: undefined status byte 0xf4"),
    }
    for name, (data, pattern) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(MidiFileError, match=pattern):
            read_midi(tmp_path / name)
    with pytest.raises(MidiFileError, match=r"missing\.mid.*no file at that path"):
        read_midi(tmp_path / "missing.mid")
    with pytest.raises(MidiFileError, match="no file at that path"):
        read_midi(tmp_path)  # a directory


def test_absurd_tempo_and_length_are_rejected(tmp_path):
    zero = tmp_path / "zero_tempo.mid"
    write_midi(zero, [(60, 0, 1)])
    mid = mido.MidiFile(str(zero))
    mid.tracks[0][0] = mido.MetaMessage("set_tempo", tempo=0)  # 0 µs per beat: infinite bpm
    mid.save(str(zero))
    with pytest.raises(MidiFileError, match=r"zero_tempo\.mid.*tempi in 1\.\.1000 bpm"):
        read_midi(zero)
    fast = write_midi(tmp_path / "fast.mid", [(60, 0, 1)], tempos=[(0, 1500)])
    with pytest.raises(MidiFileError, match=r"fast\.mid.*got 1500 bpm"):
        read_midi(fast)
    long = write_midi(tmp_path / "long.mid", [(60, 0, 1), (60, 30_000, 30_001)])
    with pytest.raises(MidiFileError, match=r"long\.mid.*at most 10000000 ticks"):
        read_midi(long)


def test_bounds_are_configurable(tmp_path):
    path = write_midi(tmp_path / "b.mid", [(60 + i, i, i + 1) for i in range(10)])
    cases = [
        (MidiBounds(max_notes=5), "at most 5 notes"),
        (MidiBounds(max_seconds=2.0), "at most 2 s"),
        (MidiBounds(max_file_bytes=20), "at most 20 bytes"),
        (MidiBounds(max_beats=5), "at most 5 beats"),
        (MidiBounds(max_ticks_per_beat=96), "1..96 ticks per beat"),
    ]
    for bounds, pattern in cases:
        with pytest.raises(MidiFileError, match=pattern):
            read_midi(path, MidiReadOptions(bounds=bounds))
    assert read_midi(path, MidiReadOptions(bounds=MidiBounds(max_notes=10))).roll.sum() == 20


def test_bad_options():
    with pytest.raises(InputError, match=r"frames_per_beat: expected an integer in 1\.\.96"):
        MidiReadOptions(frames_per_beat=0)
    with pytest.raises(InputError, match="beat: expected 'meter' or 'quarter', got 'bar'"):
        MidiReadOptions(beat="bar")


def test_folder_read_skips_and_lists_bad_files(tmp_path):
    good = [
        write_midi(tmp_path / "a.mid", [(60, 0, 1)]),
        write_midi(tmp_path / "sub" / "b.MID", [(62, 0, 2)])
        if (tmp_path / "sub").mkdir() is None
        else None,
        write_midi(tmp_path / "sub" / "c.midi", [(64, 0, 3)]),
    ]
    data = good[0].read_bytes()
    (tmp_path / "empty.mid").write_bytes(b"")
    (tmp_path / "sub" / "cut.mid").write_bytes(data[:-5])
    (tmp_path / "sub" / "text.midi").write_text("not midi")
    (tmp_path / "notes.txt").write_text("ignored: not a .mid")
    rolls, skipped = read_midi_folder(tmp_path)
    assert [r.source for r in rolls] == sorted(good)
    assert [r.roll.shape[0] for r in rolls] == [2, 4, 6]
    assert [p.name for p, _ in skipped] == ["empty.mid", "cut.mid", "text.midi"]
    assert "empty file" in skipped[0][1] and "truncated" in skipped[1][1]
    assert all(str(p) in reason for p, reason in skipped)
    with pytest.raises(InputError, match="folder: expected an existing directory"):
        read_midi_folder(tmp_path / "nope")
    assert is_midi_path("x.MIDI") and is_midi_path(tmp_path / "a.mid")
    assert not is_midi_path("x.mid.txt") and not is_midi_path("jsb:test:3")


def test_fuzzed_files_never_escape_as_other_exceptions(tmp_path):
    """Every truncation and 300 seeded random byte corruptions: a roll or a MidiFileError."""
    data = write_midi(
        tmp_path / "seed.mid",
        [(60, 0, 1), (64, 0.5, 2), (67, 1, 3)],
        tempos=[(0, 100), (2, 140)],
        time_sigs=[(0, 3, 4)],
        key="Eb",
        drums=[(36, 0, 1)],
        cc=[(0.5, 64, 127), (2, 64, 0)],
    ).read_bytes()
    rng = np.random.default_rng(0)
    variants = [data[:n] for n in range(len(data))]
    for _ in range(300):
        b = bytearray(data)
        for i in rng.integers(0, len(b), size=rng.integers(1, 4)):
            b[i] = int(rng.integers(0, 256))
        variants.append(bytes(b))
    outcomes = {"ok": 0, "error": 0}
    path = tmp_path / "fuzz.mid"
    for v in variants:
        path.write_bytes(v)
        try:
            m = read_midi(path, MidiReadOptions(apply_sustain=True, transpose_to_c=True))
            assert m.roll.shape[1] == 88
            outcomes["ok"] += 1
        except MidiFileError as exc:
            assert "fuzz.mid" in str(exc)
            outcomes["error"] += 1
    assert outcomes["ok"] > 0 and outcomes["error"] >= len(data)
