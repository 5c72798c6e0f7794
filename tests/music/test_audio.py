"""WAV rendering: header, silence where the roll is silent, pitch, no clipping, determinism."""

from __future__ import annotations

import importlib.util
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rnnrbm.music import audio
from rnnrbm.music.audio import RELEASE_S, SynthesizerUnavailableError, render_wav, synthesize
from rnnrbm.validation import InputError

SR = 8000


def read_wav(path: Path) -> tuple[Any, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        params = w.getparams()
        pcm = np.frombuffer(w.readframes(params.nframes), dtype="<i2")
    return params, pcm.astype(np.float64) / 32767


def roll_with(notes: list[tuple[int, int, int]], n_frames: int) -> np.ndarray:
    roll = np.zeros((n_frames, 88), dtype=bool)
    for pitch, a, b in notes:
        roll[a:b, pitch - 21] = True
    return roll


def test_header_and_duration(tmp_path):
    roll = roll_with([(60, 0, 4), (64, 2, 6)], 8)
    out = render_wav(roll, tmp_path / "a.wav", sample_rate=SR, tempo_bpm=120, synth="additive")
    assert out.path == tmp_path / "a.wav"
    # 8 frames of an eighth note at 120 bpm = 2 s, plus the release tail.
    assert out.duration == pytest.approx(2.0 + RELEASE_S)
    params, x = read_wav(out.path)
    assert (params.nchannels, params.sampwidth, params.framerate) == (1, 2, SR)
    assert params.nframes == round(out.duration * SR) == len(x)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]  # atomic: no temp file


def test_sound_only_where_notes_are(tmp_path):
    # Frames of 0.25 s: silent frames 0–3, A4 in frames 4–7, silence again after the release.
    roll = roll_with([(69, 4, 8)], 16)
    _, x = read_wav(render_wav(roll, tmp_path / "b.wav", sample_rate=SR).path)
    q = SR // 4
    assert not x[: 4 * q].any()  # exactly silent before the onset
    rms = np.sqrt(np.mean(x[4 * q : 8 * q] ** 2))
    assert rms > 0.1
    tail_end = 8 * q + round(RELEASE_S * SR)
    assert not x[tail_end + 1 :].any()  # and after the release tail


def test_pitch_is_equal_tempered_a440():
    x = synthesize(roll_with([(69, 0, 8)], 8), sample_rate=SR)
    spec = np.abs(np.fft.rfft(x[:SR]))  # the first second: 1 Hz bins
    assert int(np.argmax(spec)) == 440
    # The harmonics are there, and nothing at unrelated frequencies.
    assert spec[880] > 0.2 * spec[440] and spec[660] < 0.01 * spec[440]


def test_partials_above_nyquist_are_left_out():
    # At 8 kHz (Nyquist 4 kHz) C8 = 4186 Hz cannot sound at all; A6 = 1760 Hz keeps partials 1
    # and 2, and partials 3 and 4 would otherwise fold back to 2720 Hz and 960 Hz.
    assert not synthesize(roll_with([(108, 0, 4)], 4), sample_rate=SR).any()
    x = synthesize(roll_with([(93, 0, 8)], 8), sample_rate=SR)
    spec = np.abs(np.fft.rfft(x[:SR]))
    assert spec[3520] > 0.2 * spec[1760]
    assert spec[2720] < 1e-3 * spec[1760] and spec[960] < 1e-3 * spec[1760]


def test_empty_roll_is_silent(tmp_path):
    out = render_wav(np.zeros((6, 88), dtype=bool), tmp_path / "s.wav", sample_rate=SR)
    params, x = read_wav(out.path)
    assert params.nframes == round((1.5 + RELEASE_S) * SR) and not x.any()


def test_dense_roll_does_not_clip(tmp_path):
    full = np.ones((8, 88), dtype=np.uint8)  # all 88 keys at once
    x = synthesize(full, sample_rate=SR)
    assert np.abs(x).max() == pytest.approx(0.9)
    _, pcm = read_wav(render_wav(full, tmp_path / "d.wav", sample_rate=SR).path)
    assert np.abs(pcm).max() <= 1.0 and np.abs(pcm).max() == pytest.approx(0.9, abs=1e-4)


def test_deterministic_and_chunking_invariant(tmp_path, monkeypatch):
    roll = np.random.default_rng(0).random((24, 88)) < 0.05
    a = render_wav(roll, tmp_path / "1.wav", sample_rate=SR).path.read_bytes()
    b = render_wav(roll, tmp_path / "2.wav", sample_rate=SR).path.read_bytes()
    assert a == b
    whole = synthesize(roll, sample_rate=SR)
    monkeypatch.setattr(audio, "_CHUNK_SAMPLES", 1000)  # many small chunks, same sum
    assert np.allclose(synthesize(roll, sample_rate=SR), whole, atol=1e-12)


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "keep.wav"
    target.write_bytes(b"old")

    def broken(f, samples, sample_rate):
        f.write(b"RIFF")
        raise OSError("disk full")

    monkeypatch.setattr(audio, "_write_wav", broken)
    with pytest.raises(OSError, match="disk full"):
        render_wav(roll_with([(60, 0, 2)], 2), target, sample_rate=SR)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["keep.wav"]


def test_fluidsynth_missing_is_a_clear_error_and_auto_falls_back(tmp_path, monkeypatch):
    monkeypatch.setattr(audio, "_load_fluidsynth", lambda: "ModuleNotFoundError: fluidsynth")
    roll = roll_with([(60, 0, 2)], 2)
    with pytest.raises(SynthesizerUnavailableError, match=r"pip install pyfluidsynth.*\.sf2"):
        render_wav(roll, tmp_path / "f.wav", sample_rate=SR, synth="fluidsynth")
    auto = render_wav(roll, tmp_path / "auto.wav", sample_rate=SR, synth="auto")
    additive = render_wav(roll, tmp_path / "add.wav", sample_rate=SR, synth="additive")
    assert auto.path.read_bytes() == additive.path.read_bytes()


@pytest.mark.skipif(importlib.util.find_spec("fluidsynth") is not None, reason="installed")
def test_fluidsynth_really_missing_here(tmp_path):
    with pytest.raises(SynthesizerUnavailableError, match="synth='fluidsynth'"):
        render_wav(roll_with([(60, 0, 2)], 2), tmp_path / "f.wav", synth="fluidsynth")


def test_bad_arguments(tmp_path):
    roll = roll_with([(60, 0, 2)], 2)
    with pytest.raises(InputError, match="synth: expected 'auto', 'additive' or 'fluidsynth'"):
        render_wav(roll, tmp_path / "x.wav", synth="sine")
    with pytest.raises(InputError, match="sample_rate"):
        render_wav(roll, tmp_path / "x.wav", sample_rate=100)
    with pytest.raises(InputError, match=r"soundfont: expected an existing \.sf2 file"):
        render_wav(roll, tmp_path / "x.wav", soundfont=tmp_path / "none.sf2")
    with pytest.raises(InputError, match=r"shape \(T, 88\)"):
        render_wav(np.zeros((3, 12)), tmp_path / "x.wav")
    assert not any(tmp_path.iterdir())
