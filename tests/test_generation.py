"""Generation and scoring plumbing: primers, harmonisation clamps, all-or-nothing writes, scores.

MIDI files are built here with pretty_midi at 120 bpm (a beat = 0.5 s); tiny models keep the
whole file fast. Oracles: exact rolls, a brute-force sum over the hidden layer for scores.
"""

from __future__ import annotations

import json

import numpy as np
import pretty_midi
import pytest
import torch
import torch.nn.functional as F

from rnnrbm.data.polyphonic import PolyphonicDataset
from rnnrbm.generation import (
    RUN_INFO_NAME,
    dataset_frames_per_beat,
    generate_music,
    generate_rolls,
    load_music_data,
    load_primer,
    melody_clamp,
    read_run_info,
    score_midi,
    score_roll,
    write_piece,
)
from rnnrbm.models import RBM, build_sequence_model
from rnnrbm.music.midi import MidiFileError, MidiReadOptions, read_midi
from rnnrbm.validation import InputError

C_MAJOR = 0  # pretty_midi key numbers: 0..11 major on C..B
D_MAJOR = 2


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread avoids OpenMP oversubscription on a busy 2-core machine
    (measured: a 3-epoch run took 31 s with 2 threads beside another job, 0.8 s with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_midi(path, notes, *, key=None, bpm=120.0):
    """notes: (pitch, start_beat, end_beat); an optional key signature fixes the transposition."""
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


def roll_of(notes, n_frames, fpb=2):
    """Expected (T, 88) roll of notes on beat positions, ``fpb`` frames per beat."""
    r = np.zeros((n_frames, 88), dtype=bool)
    for pitch, a, b in notes:
        r[round(a * fpb) : round(b * fpb), pitch - 21] = True
    return r


def chords(n_beats=8, root=60):
    """A chord per beat: root, third and fifth of a rising pattern."""
    return [(root + d + (i % 3), i, i + 1) for i in range(n_beats) for d in (0, 4, 7)]


def tiny(name="rnn-rbm", seed=0):
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


# ----------------------------------------------------------------------------------- primers
def test_primer_from_midi_is_cut_and_transposed(tmp_path):
    notes = [(62, 0, 1), (66, 1, 2), (69, 2, 3)]  # D major triad, arpeggiated
    path = write_midi(tmp_path / "p.mid", notes, key=D_MAJOR)
    p = load_primer(path, 4, options=MidiReadOptions(transpose_to_c=True))
    assert p.transposition == -2 and p.source == str(path)
    moved = [(n - 2, a, b) for n, a, b in notes]
    np.testing.assert_array_equal(p.roll, roll_of(moved, 6)[:4])
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
def test_generated_frames_respect_primer_and_clamp(name):
    model = tiny(name)
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


def test_generation_is_seeded():
    model = tiny()
    a = generate_rolls(model, 12, gibbs_steps=2, n=3, seed=5)
    b = generate_rolls(model, 12, gibbs_steps=2, n=3, seed=5)
    c = generate_rolls(model, 12, gibbs_steps=2, n=3, seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_mean_last_gives_probabilities_and_keeps_clamped_notes():
    model = tiny()
    mask = np.zeros((4, 88), dtype=bool)
    mask[:, 50] = True
    values = mask.astype(np.float32)
    out = generate_rolls(model, 4, clamp=(mask, values), gibbs_steps=2, mean_last=True)
    assert ((out > 0) & (out < 1)).any() and out.min() >= 0 and out.max() <= 1
    np.testing.assert_array_equal(out[0, :, 50], 1.0)


def test_clamp_shape_is_checked():
    with pytest.raises(InputError, match=r"clamp.*\(4, 88\)"):
        generate_rolls(tiny(), 4, clamp=(np.zeros((3, 88), bool), np.zeros((3, 88))))


# ----------------------------------------------------------------------------------- writing
def test_write_piece_round_trips_through_midi(tmp_path):
    roll = roll_of(chords(4), 8)
    paths = write_piece(roll, tmp_path / "out", "x", frames_per_beat=2, synth="additive")
    assert {p.name for p in paths.values()} == {"x.mid", "x.wav", "x.png"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.mid", "x.png", "x.wav"]
    back = read_midi(paths["midi"], MidiReadOptions(frames_per_beat=2)).roll
    np.testing.assert_array_equal(back, roll)


def test_write_failure_leaves_nothing(tmp_path, monkeypatch):
    import rnnrbm.generation as g

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(g, "save_piano_roll", broken)  # the last of the three files
    out = tmp_path / "new"
    with pytest.raises(OSError, match="disk full"):
        write_piece(roll_of(chords(2), 4), out, synth="additive")
    assert not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "mine.txt").write_text("user file")
    with pytest.raises(OSError):
        write_piece(roll_of(chords(2), 4), kept, synth="additive")
    assert [p.name for p in kept.iterdir()] == ["mine.txt"]  # no staging folder, no .mid


def test_generate_music_shifts_back_to_the_primer_key(tmp_path):
    notes = [(62, 0, 2), (66, 0, 2), (69, 0, 2), (74, 2, 4)]
    path = write_midi(tmp_path / "d.mid", notes, key=D_MAJOR)
    primer = load_primer(path, options=MidiReadOptions(transpose_to_c=True))
    assert primer.transposition == -2
    piece = generate_music(
        tiny(), tmp_path / "g", steps=3, gibbs_steps=2, primer=primer, n=2, synth="additive"
    )
    assert piece.transposition == -2 and piece.primer_frames == 8
    names = sorted(p.name for p in (tmp_path / "g").iterdir())
    assert names == [f"sample_0{i}.{s}" for i in range(2) for s in ("mid", "png", "wav")]
    back = read_midi(piece.paths[0]["midi"], MidiReadOptions(frames_per_beat=2)).roll
    np.testing.assert_array_equal(back[:8], roll_of(notes, 8))  # the primer, in D again
    assert json.loads(json.dumps(piece.as_dict()))["frames"] == 11


def test_harmonisation_keeps_the_melody_on_top(tmp_path):
    tune = [(72, 0, 1), (74, 1, 2), (76, 2, 4)]
    path = write_midi(tmp_path / "tune.mid", tune, key=C_MAJOR)
    melody = load_primer(path, options=MidiReadOptions(transpose_to_c=True))
    piece = generate_music(tiny(), tmp_path / "h", melody=melody, gibbs_steps=2, synth="additive")
    out = piece.rolls[0].astype(bool)
    assert out.shape == (8, 88)  # steps default to the melody's length
    mel = roll_of(tune, 8)
    assert (out[mel]).all()
    top = 87 - np.argmax(mel[:, ::-1], axis=1)
    assert not any(out[t, top[t] + 1 :].any() for t in range(8))


# ----------------------------------------------------------------------------------- scoring
@torch.no_grad()
def brute_log_prob(v, W, b_v, b_h):
    """log p(v) of an RBM by summing over every hidden state (float64); biases (n,) or (N, n)."""
    v, W = v.double(), W.double()
    b_v, b_h = (b.double().expand(v.shape[0], -1) for b in (b_v, b_h))
    n_h = W.shape[1]
    H = torch.tensor([[(i >> j) & 1 for j in range(n_h)] for i in range(2**n_h)]).double()
    # log Z = logsumexp_h [h·b_h + Σ_i softplus(b_v,i + (W h)_i)], one row per frame
    terms = b_h @ H.T + F.softplus(b_v[:, None, :] + (H @ W.T)[None]).sum(-1)
    log_z = torch.logsumexp(terms, -1)
    neg_f = (v * b_v).sum(-1) + F.softplus(v @ W + b_h).sum(-1)
    return neg_f - log_z


def test_score_roll_matches_a_hidden_sum_oracle():
    model = tiny()
    roll = roll_of(chords(5), 10)
    report = score_roll(model, roll, source="x")
    assert report.estimator == "exact" and report.n_frames == 10 and report.se == 0.0
    x = torch.from_numpy(roll).float()[None]
    with torch.no_grad():
        d_v, d_h = model.offsets(x)
    est = model.estimator
    ref = brute_log_prob(x[0], est.W, est.b_v + d_v[0], est.b_h + d_h[0])
    np.testing.assert_allclose(report.per_frame, ref.numpy(), rtol=1e-5)
    assert report.mean == pytest.approx(float(ref.mean()), rel=1e-5)
    d = report.as_dict()
    assert d["nll_per_frame"] == pytest.approx(-d["log_likelihood_per_frame"])
    assert len(d["per_frame"]) == 10 and "nats" in d["units"]


def test_score_of_a_plain_rbm_and_nade():
    roll = roll_of(chords(3), 6)
    rbm = tiny("rbm")
    rep = score_roll(rbm, roll)
    f = rbm.frame
    ref = brute_log_prob(torch.from_numpy(roll).float(), f.W, f.b_v, f.b_h)
    np.testing.assert_allclose(rep.per_frame, ref.numpy(), rtol=1e-5)
    nade = score_roll(tiny("rnn-nade"), roll)
    assert nade.estimator == "exact" and np.isfinite(nade.per_frame).all()
    assert (nade.per_frame < 0).all()


def test_score_ais_reports_its_settings_and_se():
    rep = score_roll(tiny(), roll_of(chords(2), 4), method="ais", ais_runs=20, ais_betas=50)
    assert rep.estimator.startswith("ais(runs=20, betas=50") and rep.se > 0
    exact = score_roll(tiny(), roll_of(chords(2), 4))
    assert abs(rep.mean - exact.mean) < 5 * rep.se + 0.05


def test_score_midi_equals_score_of_its_roll(tmp_path):
    notes = [(62, 0, 1), (66, 1, 2), (69, 2, 3)]
    path = write_midi(tmp_path / "s.mid", notes, key=D_MAJOR)
    opts = MidiReadOptions(transpose_to_c=True)
    rep = score_midi(tiny(), path, options=opts)
    direct = score_roll(tiny(), read_midi(path, opts).roll)
    np.testing.assert_array_equal(rep.per_frame, direct.per_frame)
    assert rep.transposition == -2 and rep.source == str(path)
    empty = tmp_path / "e.mid"
    empty.write_bytes(b"")
    with pytest.raises(MidiFileError, match=r"e\.mid.*empty"):
        score_midi(tiny(), empty)


# ----------------------------------------------------------------------------------- data
def test_folder_split_is_deterministic_and_lists_bad_files(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    for i in range(12):
        write_midi(folder / ("sub" if i % 2 else ".") / f"p{i:02d}.mid", chords(2, 60 + i))
    (folder / "junk.mid").write_text("text renamed to .mid")
    write_midi(folder / "silent.mid", [])
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


def test_single_midi_file_and_errors(tmp_path):
    one = load_music_data(write_midi(tmp_path / "one.mid", chords(3)))
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


def test_benchmark_data_and_run_info(tmp_path):
    assert dataset_frames_per_beat("jsb") == 1
    assert dataset_frames_per_beat("/x/jsb_chorales.json.gz") == 1
    assert dataset_frames_per_beat("nottingham") == 2
    ckpt = tmp_path / "run" / "last.safetensors"
    assert read_run_info(ckpt) == {}
    ckpt.parent.mkdir()
    (ckpt.parent / RUN_INFO_NAME).write_text(json.dumps({"data": {"frames_per_beat": 1}}))
    assert read_run_info(ckpt)["data"]["frames_per_beat"] == 1
