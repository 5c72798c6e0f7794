"""Prepared corpora: bad files reported, incremental re-runs, content-hash splits, workers,
interrupted runs, ``rnnrbm prepare`` and training from a corpus.

One corpus is prepared per module (``made``); tests that change files work on a copy of it.
MIDI files come from conftest's writers (pretty_midi at 120 bpm).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import bad_files, chords, write_midi
from rnnrbm.cli import main
from rnnrbm.data import corpus as corpus_module
from rnnrbm.data.corpus import is_corpus, load_corpus, prepare_corpus, split_of
from rnnrbm.data.music_data import load_music_data
from rnnrbm.music.midi import MidiReadOptions, read_midi
from rnnrbm.validation import DataFormatError, InputError

OPTIONS = MidiReadOptions(transpose_to_c=True)
N_GOOD = 6
REASONS = {  # a bad file → a phrase of its reason
    "zero-byte.mid": "0 bytes",
    "truncated.mid": "to fit in the file",
    "text.mid": "starting with b'MThd'",
    "absurd-header.mid": "tracks",
    "silent.mid": "no notes",
}


def _write_good(folder: Path, i: int, *, shift: int = 0) -> Path:
    notes = chords(3 + i, 55 + i + shift)
    return write_midi(folder / f"piece{i}.mid", notes, key=(i + shift) % 12)


def _midi_folder(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    for i in range(N_GOOD):
        _write_good(folder if i % 2 else folder / "sub", i)
    bad_files(folder)
    write_midi(folder / "silent.mid", [])
    (folder / "readme.txt").write_text("not a .mid name: never read")
    return folder


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("corpus")
    midi = _midi_folder(root / "midi")
    report = prepare_corpus(midi, root / "corpus", options=OPTIONS)
    return SimpleNamespace(root=root, midi=midi, out=root / "corpus", report=report)


@pytest.fixture
def copy(made, tmp_path) -> SimpleNamespace:
    """A copy of the MIDI folder and its prepared corpus, free to change."""
    midi, out = tmp_path / "midi", tmp_path / "corpus"
    shutil.copytree(made.midi, midi)
    shutil.copytree(made.out, out)
    return SimpleNamespace(midi=midi, out=out)


def _index(out: Path) -> dict:
    return json.loads((out / "index.json").read_text())


def _by_source(out: Path) -> dict[str, dict]:
    return {e["source"]: e for e in _index(out)["pieces"]}


def _same_dataset(a, b) -> bool:
    if a.splits.keys() != b.splits.keys() or any(len(a[s]) != len(b[s]) for s in a.splits):
        return False
    return all(np.array_equal(x, y) for s in a.splits for x, y in zip(a[s], b[s], strict=True))


def _rolls(out: Path) -> dict[str, np.ndarray]:
    """Each piece's roll by its source path (``load_corpus`` keeps the index order)."""
    ds, seen = load_corpus(out), dict.fromkeys(("train", "valid", "test"), 0)
    rolls = {}
    for e in _index(out)["pieces"]:
        rolls[e["source"]] = ds[e["split"]][seen[e["split"]]]
        seen[e["split"]] += 1
    return rolls


def _shards(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.suffix == ".npz")


# ------------------------------------------------------------------------------- first run
def test_good_files_are_prepared_and_each_bad_one_is_named_with_its_reason(made):
    r = made.report
    assert (r.files, r.pieces, r.parsed, r.cached) == (N_GOOD + 5, N_GOOD, N_GOOD + 5, 0)
    skipped = {Path(f).name: reason for f, reason in r.skipped}
    assert skipped.keys() == REASONS.keys()
    for name, phrase in REASONS.items():
        assert phrase in skipped[name], skipped[name]
    assert all(str(made.midi / name) in dict(r.skipped) for name in REASONS)
    assert r.frames == sum(r.splits[s]["frames"] for s in ("train", "valid", "test")) > 0
    assert is_corpus(made.out) and not is_corpus(made.midi)


def test_index_entries_and_rolls_match_the_files(made):
    index = _index(made.out)
    assert index["format"] == "rnnrbm-corpus" and index["format_version"] == 1
    assert index["options"]["frames_per_beat"] == 2 and index["options"]["transpose_to_c"]
    ds = load_corpus(made.out)
    rolls = [r for s in ds.splits.values() for r in s]
    for e in index["pieces"]:
        path = made.midi / e["source"]
        assert e["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert e["split"] == split_of(e["sha256"], 0.1, 0.1)
        m = read_midi(path, OPTIONS)
        assert e["frames"] == len(m.roll) and e["key"] == m.key.name
        assert e["transposition"] == m.transposition and e["key_source"] == "signature"
        assert sum(np.array_equal(m.roll, x) for x in rolls) >= 1
    assert {e["source"] for e in index["pieces"]} == {
        f"{'sub/' if i % 2 == 0 else ''}piece{i}.mid" for i in range(N_GOOD)
    }
    assert all(r.dtype == bool and r.shape[1] == 88 for r in rolls)


# ------------------------------------------------------------------------------- incremental
def test_a_rerun_parses_nothing_and_gives_the_same_corpus(made):
    before = (made.out / "index.json").read_bytes()
    again = prepare_corpus(made.midi, made.out, options=OPTIONS)
    assert (again.parsed, again.cached, again.pieces) == (0, N_GOOD + 5, N_GOOD)
    assert again.skipped == made.report.skipped  # bad files are remembered, not re-read
    assert (made.out / "index.json").read_bytes() == before
    assert _same_dataset(load_corpus(made.out), load_corpus(made.out))


def test_changed_added_and_deleted_files(copy):
    before = _by_source(copy.out)
    _write_good(copy.midi, 1, shift=3)  # changed content, same name
    r = prepare_corpus(copy.midi, copy.out, options=OPTIONS)
    assert (r.parsed, r.pieces) == (1, N_GOOD)
    after = _by_source(copy.out)
    assert after["piece1.mid"]["sha256"] != before["piece1.mid"]["sha256"]
    assert all(after[s] == before[s] for s in before if s != "piece1.mid")

    _write_good(copy.midi / "sub", 9)  # a new file
    r = prepare_corpus(copy.midi, copy.out, options=OPTIONS)
    assert (r.parsed, r.pieces) == (1, N_GOOD + 1)
    assert r.new_frames == _by_source(copy.out)["sub/piece9.mid"]["frames"] > 0

    (copy.midi / "piece3.mid").unlink()
    (copy.midi / "text.mid").unlink()
    r = prepare_corpus(copy.midi, copy.out, options=OPTIONS)
    assert (r.parsed, r.pieces, len(r.skipped)) == (0, N_GOOD, 4)
    assert "piece3.mid" not in _by_source(copy.out)
    referenced = {e["shard"] for e in _index(copy.out)["pieces"]}
    assert set(_shards(copy.out)) == referenced  # no orphan shard left


def test_changing_the_read_options_reparses_everything(copy, made):
    old = _shards(copy.out)
    r = prepare_corpus(copy.midi, copy.out, options=MidiReadOptions(frames_per_beat=4))
    assert (r.parsed, r.cached, r.pieces) == (N_GOOD + 5, 0, N_GOOD)
    assert r.frames == 2 * made.report.frames
    assert not set(old) & set(_shards(copy.out))  # the old shards are gone


def test_the_split_depends_only_on_the_content(copy):
    before = _by_source(copy.out)
    (copy.midi / "sub" / "piece0.mid").rename(copy.midi / "renamed.mid")
    r = prepare_corpus(copy.midi, copy.out, options=OPTIONS, progress=True)
    assert r.parsed == 0
    after = _by_source(copy.out)
    assert after["renamed.mid"]["split"] == before["sub/piece0.mid"]["split"]
    assert after["renamed.mid"]["sha256"] == before["sub/piece0.mid"]["sha256"]
    assert [split_of(f"{i:08x}", 0.25, 0.25) for i in (0, 2**30, 2**31, 2**32 - 1)] == [
        "test",
        "valid",
        "train",
        "train",
    ]


def test_two_workers_give_the_same_corpus_as_one(made, tmp_path, monkeypatch):
    assert made.report.workers == 1
    assert prepare_corpus(made.midi, tmp_path / "c", options=OPTIONS, workers=2).workers == 1
    monkeypatch.setattr(corpus_module, "MIN_FILES_PER_WORKER", 2)  # a pool even for 11 files
    r = prepare_corpus(made.midi, tmp_path / "c2", options=OPTIONS, workers=2)
    assert r.workers == 2 and r.skipped == made.report.skipped
    assert (tmp_path / "c2" / "index.json").read_bytes() == (made.out / "index.json").read_bytes()
    assert _same_dataset(load_corpus(tmp_path / "c2"), load_corpus(made.out))


def test_small_shards_and_identical_files(made, tmp_path):
    midi, out = tmp_path / "midi", tmp_path / "corpus"
    shutil.copytree(made.midi, midi)
    shutil.copy(midi / "piece1.mid", midi / "twin.mid")
    r = prepare_corpus(midi, out, options=OPTIONS, shard_frames=10)
    assert (r.parsed, r.pieces) == (N_GOOD + 5, N_GOOD + 1)  # the twin's content is read once
    entries, rolls, before = _by_source(out), _rolls(out), _rolls(made.out)
    assert {k: v for k, v in entries["twin.mid"].items() if k != "source"} == {
        k: v for k, v in entries["piece1.mid"].items() if k != "source"
    }
    assert 1 < r.shards == len(_shards(out))
    assert all(np.array_equal(rolls[s], before[s]) for s in before)
    assert np.array_equal(rolls["twin.mid"], before["piece1.mid"])


# ------------------------------------------------------------------------------- interruption
def _interrupt_index_write(monkeypatch) -> None:
    def fail(out, index):
        raise KeyboardInterrupt  # as Ctrl-C would, after the shards are on disk

    monkeypatch.setattr(corpus_module, "_write_index", fail)


def test_an_interrupted_run_keeps_the_previous_index_and_the_next_run_resumes(copy, monkeypatch):
    before, old = (copy.out / "index.json").read_bytes(), _rolls(copy.out)
    _write_good(copy.midi, 8)
    with monkeypatch.context() as m:
        _interrupt_index_write(m)
        with pytest.raises(KeyboardInterrupt):
            prepare_corpus(copy.midi, copy.out, options=OPTIONS)
    assert (copy.out / "index.json").read_bytes() == before
    orphans = set(_shards(copy.out)) - {e["shard"] for e in _index(copy.out)["pieces"]}
    assert len(orphans) == 1  # the new piece's shard, which the old index ignores
    assert _rolls(copy.out).keys() == old.keys()
    r = prepare_corpus(copy.midi, copy.out, options=OPTIONS)
    assert (r.parsed, r.pieces) == (1, N_GOOD + 1)
    assert set(_shards(copy.out)) == {e["shard"] for e in _index(copy.out)["pieces"]}
    assert "piece8.mid" in _rolls(copy.out)


def test_an_interrupted_first_run_resumes(made, tmp_path, monkeypatch):
    out = tmp_path / "corpus"
    with monkeypatch.context() as m:
        _interrupt_index_write(m)
        with pytest.raises(KeyboardInterrupt):
            prepare_corpus(made.midi, out, options=OPTIONS)
    assert not is_corpus(out) and _shards(out)
    (out / ".shard-00007.npz.abc_12.tmp").write_bytes(b"half a shard")  # a killed write
    r = prepare_corpus(made.midi, out, options=OPTIONS)
    assert (out / "index.json").read_bytes() == (made.out / "index.json").read_bytes()
    assert r.parsed == N_GOOD + 5 and not (out / ".shard-00007.npz.abc_12.tmp").exists()


# ------------------------------------------------------------------------------- errors
def test_an_unreadable_file_is_named_and_retried_next_run(copy, monkeypatch):
    real = corpus_module._sha256

    def locked(path):
        if path.name == "piece1.mid":
            raise PermissionError(13, "Permission denied")
        return real(path)

    with monkeypatch.context() as m:
        m.setattr(corpus_module, "_sha256", locked)
        r = prepare_corpus(copy.midi, copy.out, options=OPTIONS)
    reasons = dict(r.skipped)
    assert "Permission denied" in reasons[str(copy.midi / "piece1.mid")]
    assert (r.files, r.pieces, len(r.skipped)) == (N_GOOD + 5, N_GOOD - 1, 6)
    r = prepare_corpus(copy.midi, copy.out, options=OPTIONS)  # readable again: read again
    assert (r.parsed, r.pieces, len(r.skipped)) == (1, N_GOOD, 5)


def test_bad_arguments_and_folders(made, tmp_path):
    with pytest.raises(InputError, match=r"midi_dir .*nope.*a folder of MIDI files"):
        prepare_corpus(tmp_path / "nope", tmp_path / "c", options=OPTIONS)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"out_dir .*other.*notes\.txt"):
        prepare_corpus(made.midi, other, options=OPTIONS)
    with pytest.raises(InputError, match="valid_fraction \\+ test_fraction"):
        prepare_corpus(
            made.midi, tmp_path / "c", options=OPTIONS, valid_fraction=0.6, test_fraction=0.6
        )
    assert not (tmp_path / "c").exists()


def test_a_missing_shard_or_a_broken_index_is_named(copy, made, tmp_path):
    (copy.out / _shards(copy.out)[0]).unlink()
    with pytest.raises(DataFormatError, match=r"shard-00000\.npz"):
        load_corpus(copy.out)
    r = prepare_corpus(copy.midi, copy.out, options=OPTIONS)  # re-reads what the shard held
    assert r.parsed == N_GOOD and _same_dataset(load_corpus(copy.out), load_corpus(made.out))
    (copy.out / "index.json").write_text('{"format": "rnnrbm-corpus", "format_version": 99}')
    with pytest.raises(DataFormatError, match=r"index\.json.*version 99.*Fix: prepare"):
        load_music_data(copy.out)
    all_test = tmp_path / "all-test"
    prepare_corpus(made.midi, all_test, options=OPTIONS, valid_fraction=0, test_fraction=1)
    with pytest.raises(InputError, match=r"none in train"):
        load_corpus(all_test)


# ------------------------------------------------------------------------------- CLI
def _json(capsys) -> dict:
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return json.loads(lines[0])


def test_prepare_command_json_and_exit_codes(made, tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["prepare", str(made.midi), "--out", str(out), "--workers", "1", "--json"]) == 1
    res = _json(capsys)
    assert res["command"] == "prepare" and res["pieces"] == N_GOOD and res["parsed"] == N_GOOD + 5
    assert {Path(s["file"]).name for s in res["skipped"]} == REASONS.keys()
    assert (
        res["files_per_s"] > 0 and res["frames_per_s"] > 0 and res["frames"] == made.report.frames
    )
    assert (out / "index.json").read_bytes() == (made.out / "index.json").read_bytes()

    good = tmp_path / "good"
    good.mkdir()
    _write_good(good, 0)
    assert main(["prepare", str(good), "--out", str(tmp_path / "g"), "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "1 pieces" in text and "0 skipped" in text and "next: rnnrbm train" in text

    assert main(["prepare", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err and "Fix:" in err
    assert main(["prepare", str(good), "--out", str(tmp_path / "x"), "--workers", "0"]) == 2


def test_train_from_a_corpus(made, tmp_path, capsys, one_thread):
    data = load_music_data(made.out)
    assert (data.kind, data.frames_per_beat, data.transpose_to_c) == ("corpus", 2, True)
    assert _same_dataset(data.dataset, load_corpus(made.out)) and data.dataset["train"]
    argv = ["train", "--model", "rnn-nade", "--data", str(made.out), "--out", str(tmp_path / "run")]
    argv += ["--epochs", "1", "--hidden", "4", "--recurrent", "4", "--pretrain-epochs", "0"]
    assert main([*argv, "--rnn-pretrain-epochs", "0", "--json"]) == 0
    res = _json(capsys)
    assert res["data"]["kind"] == "corpus" and res["data"]["source"] == str(made.out)
    assert res["data"]["splits"]["train"]["sequences"] == len(data.dataset["train"])
    assert (tmp_path / "run" / "last.safetensors").is_file()
