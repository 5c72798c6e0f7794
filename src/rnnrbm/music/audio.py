"""Render a piano-roll to a 16-bit mono WAV file, with no system synthesizer needed.

The default is additive synthesis in numpy: each held run of the roll becomes one tone of
``len(HARMONICS)`` harmonics (amplitude 1/k, those above Nyquist left out) under an
attack–decay–sustain–release envelope; all notes are summed with ``np.bincount`` in a few large
vectorised chunks and the mix is scaled to a 0.9 peak, so it never clips. The output depends
only on the inputs (no randomness). With ``synth="fluidsynth"`` (pyfluidsynth, the system
FluidSynth library and a General MIDI ``.sf2`` soundfont) pretty_midi renders real instruments.
"""

from __future__ import annotations

import importlib
import os
import wave
from pathlib import Path
from typing import BinaryIO, Literal, NamedTuple

import numpy as np

from rnnrbm.files import atomic_write
from rnnrbm.music.midi import MAX_FRAMES_PER_BEAT, roll_to_pretty_midi
from rnnrbm.music.pianoroll import check_roll, roll_to_notes
from rnnrbm.validation import InputError, check_choice, error_message

__all__ = ["HARMONICS", "Rendered", "SynthesizerUnavailableError", "render_wav", "synthesize"]

HARMONICS = (1.0, 1 / 2, 1 / 3, 1 / 4)  # amplitude of partial k is 1/k: a soft, organ-like tone
ATTACK_S, DECAY_S, SUSTAIN, RELEASE_S = 0.01, 0.15, 0.5, 0.25
PEAK = 0.9  # headroom below full scale
_CHUNK_SAMPLES = 1 << 19  # samples of note material per vectorised pass (~40 MB of temporaries)


class SynthesizerUnavailableError(InputError):
    """``synth="fluidsynth"`` was requested but FluidSynth or a soundfont is missing."""


class Rendered(NamedTuple):
    """A written WAV file and its length in seconds."""

    path: Path
    duration: float


def synthesize(
    roll: np.ndarray,
    *,
    frames_per_beat: int = 2,
    tempo_bpm: float = 120.0,
    sample_rate: int = 22050,
) -> np.ndarray:
    """Additive synthesis of a ``(T, 88)`` roll → float64 samples in [−0.9, 0.9].

    Length: ``T`` frames of ``60 / (tempo_bpm · frames_per_beat)`` s plus a ``RELEASE_S`` tail.
    Column ``k`` sounds at ``440 · 2^((21 + k − 69) / 12)`` Hz (equal temperament, A4 = 440 Hz).
    """
    roll = check_roll(roll)
    frame_s = 60.0 / (float(tempo_bpm) * frames_per_beat)
    n_total = round((len(roll) * frame_s + RELEASE_S) * sample_rate)
    out = np.zeros(n_total)
    notes = np.array([tuple(n) for n in roll_to_notes(roll)], dtype=np.int64).reshape(-1, 3)
    if not len(notes):
        return out
    first = np.round(notes[:, 1] * frame_s * sample_rate).astype(np.int64)
    held = np.round(notes[:, 2] * frame_s * sample_rate).astype(np.int64) - first
    span = np.minimum(held + round(RELEASE_S * sample_rate), n_total - first)
    freq = 440.0 * 2.0 ** ((notes[:, 0] - 69) / 12.0)
    # Chunks of whole notes, about _CHUNK_SAMPLES of material each, keep memory flat.
    group = (np.cumsum(span) - span) // _CHUNK_SAMPLES
    for g in np.unique(group):
        i = np.flatnonzero(group == g)
        lo = int(first[i].min())
        part = _render_chunk(first[i] - lo, held[i], span[i], freq[i], sample_rate)
        out[lo : lo + len(part)] += part
    peak = np.abs(out).max()
    return out * (PEAK / peak) if peak > 0 else out


def _render_chunk(
    first: np.ndarray,
    held: np.ndarray,
    span: np.ndarray,
    freq: np.ndarray,
    sr: int,
) -> np.ndarray:
    """Sum of the notes' tones (onsets ``first`` in samples), one flat axis, added by bincount."""
    owner = np.repeat(np.arange(len(span)), span)  # which note each flat sample belongs to
    local = np.arange(span.sum()) - np.repeat(np.cumsum(span) - span, span)  # sample in note
    t = local / sr
    f = freq[owner]
    tone = np.zeros(len(t))
    for k, amp in enumerate(HARMONICS, start=1):
        # Partials at or above Nyquist would alias to unrelated pitches: leave them out.
        tone += np.where(k * f < sr / 2, amp * np.sin(2 * np.pi * k * f * t), 0.0)

    def envelope(tt: np.ndarray) -> np.ndarray:  # attack ramp × decay toward the sustain level
        return np.minimum(tt / ATTACK_S, 1.0) * (SUSTAIN + (1 - SUSTAIN) * np.exp(-tt / DECAY_S))

    h = held[owner]
    after = np.maximum(local - h, 0) / sr  # time since release
    release = np.maximum(1.0 - after / RELEASE_S, 0.0) * envelope(h / sr)
    env = np.where(local < h, envelope(t), release)
    return np.bincount(first[owner] + local, weights=tone * env)


def _load_fluidsynth() -> str | None:
    """None when pyfluidsynth and its system library import, else the reason they do not."""
    try:
        importlib.import_module("fluidsynth")
    except Exception as exc:  # ImportError, or OSError when libfluidsynth is missing
        return f"{type(exc).__name__}: {exc}"
    return None


def _default_soundfont() -> Path | None:
    """pretty_midi ships a small General MIDI soundfont (TimGM6mb.sf2)."""
    import pretty_midi

    sf2 = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    return sf2 if sf2.is_file() else None


def _write_wav(f: BinaryIO, samples: np.ndarray, sample_rate: int) -> None:
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(f, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())


def render_wav(
    roll: np.ndarray,
    path: str | os.PathLike[str],
    *,
    frames_per_beat: int = 2,
    tempo_bpm: float = 120.0,
    sample_rate: int = 22050,
    soundfont: str | os.PathLike[str] | None = None,
    synth: Literal["auto", "additive", "fluidsynth"] = "auto",
) -> Rendered:
    """Render ``roll`` to a 16-bit PCM mono WAV at ``path`` (atomic write).

    ``synth``: "additive" (numpy, always available), "fluidsynth" (raises
    :class:`SynthesizerUnavailableError` naming what to install when it cannot run), or "auto"
    (FluidSynth when pyfluidsynth imports and a soundfont is given or bundled with pretty_midi,
    else additive). Returns ``Rendered(path, duration_seconds)``.
    """
    roll = check_roll(roll)
    check_choice(synth, "synth", ("auto", "additive", "fluidsynth"))
    if not isinstance(sample_rate, int) or not 4000 <= sample_rate <= 192000:
        raise InputError(
            error_message("sample_rate", "an integer in 4000..192000 Hz", repr(sample_rate), "fix")
        )
    if not isinstance(frames_per_beat, int) or not 1 <= frames_per_beat <= MAX_FRAMES_PER_BEAT:
        raise InputError(
            error_message(
                "frames_per_beat", f"1..{MAX_FRAMES_PER_BEAT}", repr(frames_per_beat), "fix"
            )
        )
    if not 1.0 <= float(tempo_bpm) <= 1000.0:
        raise InputError(error_message("tempo_bpm", "1..1000", repr(tempo_bpm), "fix it"))
    if soundfont is not None and not Path(soundfont).is_file():
        raise InputError(
            error_message("soundfont", "an existing .sf2 file", repr(str(soundfont)), "fix path")
        )

    use_fluid = False
    if synth != "additive":
        missing = _load_fluidsynth()
        sf2 = Path(soundfont) if soundfont is not None else _default_soundfont()
        if synth == "fluidsynth" and (missing or sf2 is None):
            raise SynthesizerUnavailableError(
                error_message(
                    "synth='fluidsynth'",
                    "pyfluidsynth, the FluidSynth library and a General MIDI .sf2 soundfont",
                    missing or "no soundfont (none given, none bundled with pretty_midi)",
                    "`pip install pyfluidsynth`, install the system library (apt install "
                    "fluidsynth / brew install fluid-synth), pass soundfont='path/to/GM.sf2'; "
                    "or use synth='additive'",
                )
            )
        use_fluid = missing is None and sf2 is not None

    if use_fluid:
        pm = roll_to_pretty_midi(roll, frames_per_beat=frames_per_beat, tempo_bpm=tempo_bpm)
        samples = np.asarray(pm.fluidsynth(fs=sample_rate, synthesizer=str(sf2), normalize=False))
        peak = np.abs(samples).max(initial=0.0)
        samples = samples * (PEAK / peak) if peak > 0 else samples
    else:
        samples = synthesize(
            roll, frames_per_beat=frames_per_beat, tempo_bpm=tempo_bpm, sample_rate=sample_rate
        )
    out = atomic_write(path, lambda f: _write_wav(f, samples, sample_rate))
    return Rendered(out, len(samples) / sample_rate)
