"""Generation plumbing: primers, harmonisation clamps, sampling, all-or-nothing writes.

MIDI files, expected rolls and tiny models come from the ``music`` fixture (conftest); tiny
models keep the whole file fast. Oracles: exact rolls.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from rnnrbm.data.polyphonic import PolyphonicDataset
from rnnrbm.generation import (
    generate_music,
    generate_rolls,
    load_primer,
    melody_clamp,
    write_piece,
)
from rnnrbm.music.midi import MidiFileError, MidiReadOptions, read_midi
from rnnrbm.validation import InputError

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------- primers
def test_primer_from_midi_is_cut_and_transposed(tmp_path, music):
    notes = [(62, 0, 1), (66, 1, 2), (69, 2, 3)]  # D major triad, arpeggiated
    path = music.write_midi(tmp_path / "p.mid", notes, key=music.D_MAJOR)
    p = load_primer(path, 4, options=MidiReadOptions(transpose_to_c=True))
    assert p.transposition == -2 and p.source == str(path)
    moved = [(n - 2, a, b) for n, a, b in notes]
    np.testing.assert_array_equal(p.roll, music.roll_of(moved, 6)[:4])
    assert load_primer(path, options=MidiReadOptions()).roll.shape == (6, 88)


def test_primer_from_dataset_spec():
    seqs = [np.eye(88, dtype=bool)[:5], np.eye(88, dtype=bool)[3:10]]
    ds = PolyphonicDataset("toy", "memory", {"train": seqs[:1], "test": seqs})
    p = load_primer("toy:test:1", 2, dataset=ds)
    np.testing.assert_array_equal(p.roll, seqs[1][:2])
    assert p.source == "toy:test:1" and p.transposition == 0
    np.testing.assert_array_equal(load_primer("toy", dataset=ds).roll, seqs[0])  # test:0
    with pytest.raises(InputError, match=r"primer 'toy:test:5'.*index in 0\.\.1"):
        load_primer("toy:test:5", dataset=ds)


def test_primer_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_text("not midi at all")
    with pytest.raises(MidiFileError, match=r"bad\.mid"):
        load_primer(bad)
    with pytest.raises(InputError, match="primer frames"):
        load_primer(np.zeros((3, 88), bool), 0)


# ----------------------------------------------------------------------------------- clamps
def test_melody_clamp_on_top_and_anywhere():
    mel = np.zeros((3, 88), dtype=bool)
    mel[0, 40] = mel[2, 10] = mel[2, 20] = True  # frame 1 rests
    mask, values = melody_clamp(mel)
    np.testing.assert_array_equal(values, mel)
    expected = np.zeros((3, 88), dtype=bool)
    expected[0, 40:] = True  # the note and every key above it
    expected[2, 10] = True
    expected[2, 20:] = True  # above the highest melody note only
    np.testing.assert_array_equal(mask, expected)
    mask2, _ = melody_clamp(mel, on_top=False)
    np.testing.assert_array_equal(mask2, mel)


@pytest.mark.parametrize("name", ["rnn-rbm", "rtrbm", "rnn-nade", "rbm"])
def test_generated_frames_respect_primer_and_clamp(name, music):
    model = music.tiny(name)
    primer = np.zeros((3, 88), dtype=bool)
    primer[:, [39, 43, 46]] = True
    mel = np.zeros((5, 88), dtype=bool)
    mel[np.arange(5), 60 + np.arange(5)] = True
    mask, values = melody_clamp(mel)
    out = generate_rolls(model, 5, primer=primer, clamp=(mask, values), gibbs_steps=3, n=2, seed=1)
    assert out.shape == (2, 8, 88) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :3], np.broadcast_to(primer, (2, 3, 88)))
    new = out[:, 3:]
    np.testing.assert_array_equal(new[:, mask], np.broadcast_to(values[mask], (2, int(mask.sum()))))
    assert set(np.unique(out)) <= {0.0, 1.0}


def test_generation_is_seeded(music):
    model = music.tiny()
    a = generate_rolls(model, 12, gibbs_steps=2, n=3, seed=5)
    b = generate_rolls(model, 12, gibbs_steps=2, n=3, seed=5)
    c = generate_rolls(model, 12, gibbs_steps=2, n=3, seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_mean_last_gives_probabilities_and_keeps_clamped_notes(music):
    model = music.tiny()
    mask = np.zeros((4, 88), dtype=bool)
    mask[:, 50] = True
    values = mask.astype(np.float32)
    out = generate_rolls(model, 4, clamp=(mask, values), gibbs_steps=2, mean_last=True)
    assert ((out > 0) & (out < 1)).any() and out.min() >= 0 and out.max() <= 1
    np.testing.assert_array_equal(out[0, :, 50], 1.0)


def test_clamp_shape_is_checked(music):
    with pytest.raises(InputError, match=r"clamp.*\(4, 88\)"):
        generate_rolls(music.tiny(), 4, clamp=(np.zeros((3, 88), bool), np.zeros((3, 88))))


# ----------------------------------------------------------------------------------- writing
def test_write_piece_round_trips_through_midi(tmp_path, music):
    roll = music.roll_of(music.chords(4), 8)
    paths = write_piece(roll, tmp_path / "out", "x", frames_per_beat=2, synth="additive")
    assert {p.name for p in paths.values()} == {"x.mid", "x.wav", "x.png"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.mid", "x.png", "x.wav"]
    back = read_midi(paths["midi"], MidiReadOptions(frames_per_beat=2)).roll
    np.testing.assert_array_equal(back, roll)


def test_write_failure_leaves_nothing(tmp_path, monkeypatch, music):
    import rnnrbm.generation as g

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(g, "save_piano_roll", broken)  # the last of the three files
    out = tmp_path / "new"
    with pytest.raises(OSError, match="disk full"):
        write_piece(music.roll_of(music.chords(2), 4), out, synth="additive")
    assert not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "mine.txt").write_text("user file")
    with pytest.raises(OSError):
        write_piece(music.roll_of(music.chords(2), 4), kept, synth="additive")
    assert [p.name for p in kept.iterdir()] == ["mine.txt"]  # no staging folder, no .mid


def test_generate_music_shifts_back_to_the_primer_key(tmp_path, music):
    notes = [(62, 0, 2), (66, 0, 2), (69, 0, 2), (74, 2, 4)]
    path = music.write_midi(tmp_path / "d.mid", notes, key=music.D_MAJOR)
    primer = load_primer(path, options=MidiReadOptions(transpose_to_c=True))
    assert primer.transposition == -2
    piece = generate_music(
        music.tiny(), tmp_path / "g", steps=3, gibbs_steps=2, primer=primer, n=2, synth="additive"
    )
    assert piece.transposition == -2 and piece.primer_frames == 8
    names = sorted(p.name for p in (tmp_path / "g").iterdir())
    assert names == [f"sample_0{i}.{s}" for i in range(2) for s in ("mid", "png", "wav")]
    back = read_midi(piece.paths[0]["midi"], MidiReadOptions(frames_per_beat=2)).roll
    np.testing.assert_array_equal(back[:8], music.roll_of(notes, 8))  # the primer, in D again
    assert json.loads(json.dumps(piece.as_dict()))["frames"] == 11


def test_harmonisation_keeps_the_melody_on_top(tmp_path, music):
    tune = [(72, 0, 1), (74, 1, 2), (76, 2, 4)]
    path = music.write_midi(tmp_path / "tune.mid", tune, key=music.C_MAJOR)
    melody = load_primer(path, options=MidiReadOptions(transpose_to_c=True))
    piece = generate_music(
        music.tiny(), tmp_path / "h", melody=melody, gibbs_steps=2, synth="additive"
    )
    out = piece.rolls[0].astype(bool)
    assert out.shape == (8, 88)  # steps default to the melody's length
    mel = music.roll_of(tune, 8)
    assert (out[mel]).all()
    top = 87 - np.argmax(mel[:, ::-1], axis=1)
    assert not any(out[t, top[t] + 1 :].any() for t in range(8))
