"""Music training data: a MIDI folder split deterministically, a single file, a benchmark.

MIDI files come from the ``music`` fixture (conftest): pretty_midi at 120 bpm.
"""

from __future__ import annotations

import gzip
import json

import pytest

from rnnrbm.data.music_data import dataset_frames_per_beat, load_music_data
from rnnrbm.music.midi import MidiFileError
from rnnrbm.validation import InputError


def test_folder_split_is_deterministic_and_lists_bad_files(tmp_path, music):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    for i in range(12):
        music.write_midi(
            folder / ("sub" if i % 2 else ".") / f"p{i:02d}.mid", music.chords(2, 60 + i)
        )
    (folder / "junk.mid").write_text("text renamed to .mid")
    music.write_midi(folder / "silent.mid", [])
    data = load_music_data(folder)
    assert data.kind == "midi" and data.frames_per_beat == 2 and data.transpose_to_c
    assert sorted(len(v) for v in data.files.values()) == [1, 11, 12]
    assert set(data.files["train"]).isdisjoint(data.files["valid"])
    reasons = dict(data.skipped)
    assert set(reasons) == {str(folder / "junk.mid"), str(folder / "silent.mid")}
    assert "MThd" in reasons[str(folder / "junk.mid")]
    again = load_music_data(folder)
    assert again.files == data.files
    d = data.describe()
    assert d["splits"]["valid"] == {"sequences": 1, "frames": 4} and len(d["skipped"]) == 2


def test_single_midi_file_and_errors(tmp_path, music):
    one = load_music_data(music.write_midi(tmp_path / "one.mid", music.chords(3)))
    assert list(one.dataset.splits) == ["train", "all"]
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd\x00\x00")
    with pytest.raises(MidiFileError, match=r"bad\.mid"):
        load_music_data(bad)
    empty_dir = tmp_path / "none"
    empty_dir.mkdir()
    (empty_dir / "x.mid").write_text("nope")
    with pytest.raises(InputError, match=r"none.*readable MIDI file.*x\.mid"):
        load_music_data(empty_dir)


def test_benchmark_frames_per_beat():
    assert dataset_frames_per_beat("jsb") == 1
    assert dataset_frames_per_beat("/x/jsb_chorales.json.gz") == 1
    assert dataset_frames_per_beat("nottingham") == 2


def test_benchmark_file_keeps_its_splits_and_framing(tmp_path):
    path = tmp_path / "jsb_chorales.json.gz"
    splits = {"train": [[[60, 64], [62]]], "valid": [[[60]]], "test": [[[48], []]]}
    path.write_bytes(gzip.compress(json.dumps(splits).encode()))
    data = load_music_data(path)
    assert data.kind == "benchmark" and data.frames_per_beat == 1 and data.transpose_to_c
    assert data.files == {} and data.skipped == []
    assert data.describe()["splits"]["train"] == {"sequences": 1, "frames": 2}
