"""Music out: primers, harmonisation, sampling, and writing pieces all or nothing.

The pipeline behind ``rnnrbm generate``, usable from Python (training data are loaded by
``data.music_data.load_music_data``; a user's piece is scored by ``evaluation.scoring``):

* :func:`load_primer` — the first ``N`` frames of a MIDI file or of a dataset sequence
  (``"jsb:test:3"``), as a ``(T0, 88)`` roll the recurrence reads before it samples.
* :func:`melody_clamp` — harmonisation: the melody's notes are clamped *on* in every Gibbs step
  of their frame (and, by default, every key above the melody *off*, so it stays the top voice);
  the other keys are sampled given them (``SequenceModel.generate(clamp=...)``; for RNN-NADE the
  conditioning is exact only in NADE's key order, see ``NADEFrame.sample``).
* :func:`generate_rolls` — seeded sampling from a checkpointed model (any temporal model, or a
  plain ``RBM``, whose frames are independent).
* :func:`write_piece` — MIDI + WAV + piano-roll PNG, all or nothing: the files are written in a
  hidden staging folder inside the output folder and moved into place only when all three exist.

Pieces are transposed to C major / C minor before the model sees them when the model was trained
on such data (the benchmark convention); generated music is shifted back to the primer's or
melody's key, so a harmonisation sounds in the key it was given.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from rnnrbm.data.polyphonic import PolyphonicDataset, load_polyphonic
from rnnrbm.evaluation.scoring import MusicModel
from rnnrbm.models.rbm import RBM
from rnnrbm.models.sequence import SequenceModel
from rnnrbm.music.audio import render_wav
from rnnrbm.music.midi import MidiReadOptions, is_midi_path, read_midi, roll_to_midi
from rnnrbm.music.pianoroll import N_KEYS, check_roll
from rnnrbm.plotting import save_piano_roll
from rnnrbm.validation import InputError, InputTypeError, check_positive_int, error_message

__all__ = [
    "GeneratedPiece",
    "Primer",
    "generate_music",
    "generate_rolls",
    "load_primer",
    "melody_clamp",
    "write_piece",
]


# ------------------------------------------------------------------------------ primers & melodies
@dataclass(frozen=True)
class Primer:
    """A ``(T0, 88)`` bool roll, where it came from, and the shift applied to reach C."""

    roll: np.ndarray
    source: str
    transposition: int = 0


_DATASET_SPEC = re.compile(r"^(?P<data>.+?)(?::(?P<split>train|valid|test))?(?::(?P<index>\d+))?$")


def load_primer(
    spec: str | os.PathLike[str] | np.ndarray,
    n_frames: int | None = None,
    *,
    options: MidiReadOptions | None = None,
    dataset: PolyphonicDataset | None = None,
) -> Primer:
    """The first ``n_frames`` frames (all when ``None``) of a primer.

    ``spec`` is a roll, a MIDI file (read with ``options``; ``transpose_to_c`` there moves it to
    C and the shift is recorded), or a dataset sequence ``"DATA[:SPLIT[:INDEX]]"`` — ``DATA`` a
    benchmark name or a ``.json.gz``/``.pickle`` path, ``SPLIT`` default ``test``, ``INDEX``
    default 0 — e.g. ``"jsb:test:3"``. ``dataset`` (already loaded) replaces ``DATA``.
    """
    if n_frames is not None:
        n_frames = check_positive_int(n_frames, "primer frames")
    if isinstance(spec, np.ndarray):
        roll, source, shift = check_roll(spec, "primer"), "array", 0
    elif not isinstance(spec, str | os.PathLike):
        raise InputTypeError(
            error_message(
                "primer", "a MIDI path, 'DATA:SPLIT:INDEX' or a roll", type(spec).__name__, "fix"
            )
        )
    elif is_midi_path(spec):
        read = read_midi(spec, options or MidiReadOptions())
        roll, source, shift = read.roll, str(spec), read.transposition
    else:
        roll, source = _dataset_sequence(str(spec), dataset)
        shift = 0
    if len(roll) == 0:
        raise InputError(
            error_message(f"primer {source!r}", "at least one frame", "an empty piece", "fix it")
        )
    return Primer(roll[:n_frames] if n_frames is not None else roll, source, shift)


def _dataset_sequence(spec: str, dataset: PolyphonicDataset | None) -> tuple[np.ndarray, str]:
    m = _DATASET_SPEC.match(spec)
    assert m is not None  # the pattern matches any non-empty string
    split, index = m["split"] or "test", int(m["index"] or 0)
    if dataset is None:
        dataset = load_polyphonic(m["data"], splits=(split,))
    seqs = dataset[split]
    if index >= len(seqs):
        raise InputError(
            error_message(
                f"primer {spec!r}",
                f"a sequence index in 0..{len(seqs) - 1} of split {split!r}",
                str(index),
                "pick an existing sequence",
            )
        )
    return check_roll(seqs[index], "primer"), f"{dataset.name}:{split}:{index}"


def melody_clamp(melody: np.ndarray, *, on_top: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Clamp ``(mask, values)``, each ``(T, 88)``, that fix a melody during generation.

    Every sounding melody note is clamped on. With ``on_top`` every key *above* the highest
    melody note of a frame is clamped off too, so the sampled harmony stays below the tune
    (a soprano melody); frames where the melody rests are left free.
    """
    mel = check_roll(melody, "melody")
    mask = mel.copy()
    if on_top:
        sounding = mel.any(axis=1)
        top = N_KEYS - 1 - np.argmax(mel[:, ::-1], axis=1)  # highest sounding key per frame
        above = np.arange(N_KEYS)[None, :] > top[:, None]
        mask |= above & sounding[:, None]
    return mask, mel.copy()


# ------------------------------------------------------------------------------ sampling
def generate_rolls(
    model: MusicModel,
    n_steps: int,
    *,
    primer: np.ndarray | None = None,
    clamp: tuple[np.ndarray, np.ndarray] | None = None,
    gibbs_steps: int = 25,
    n: int = 1,
    seed: int = 0,
    mean_last: bool = False,
) -> np.ndarray:
    """Sample ``n`` pieces: ``(n, T0 + n_steps, 88)`` float32 (binary unless ``mean_last``).

    ``primer`` ``(T0, 88)`` is read first and returned unchanged as the first frames;
    ``clamp`` ``(mask, values)`` of shape ``(n_steps, 88)`` fixes notes of the new frames.
    A plain ``RBM`` has no memory: its frames are independent draws (the primer is only
    prepended). Reproducible for a given ``seed`` and device.
    """
    n_steps = check_positive_int(n_steps, "steps")
    gibbs_steps = check_positive_int(gibbs_steps, "gibbs_steps")
    n = check_positive_int(n, "n")
    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    dtype = next(model.parameters()).dtype
    p = None if primer is None else torch.as_tensor(check_roll(primer, "primer"), device=dev)
    c = None
    if clamp is not None:
        mask, values = (np.asarray(a) for a in clamp)
        if mask.shape != (n_steps, N_KEYS) or values.shape != mask.shape:
            raise InputError(
                error_message(
                    "clamp",
                    f"mask and values of shape ({n_steps}, {N_KEYS}) (one row per new frame)",
                    f"{mask.shape} and {values.shape}",
                    "pad or cut the melody to the number of steps",
                )
            )
        c = (
            torch.as_tensor(mask.astype(bool), device=dev)[None],
            torch.as_tensor(values.astype(np.float32), device=dev, dtype=dtype)[None],
        )
    model.eval()
    with torch.no_grad():
        if isinstance(model, SequenceModel):
            out = model.generate(
                n_steps,
                primer=None if p is None else p[None].to(dtype),
                gibbs_steps=gibbs_steps,
                clamp=c,
                generator=gen,
                n=n,
                mean_last=mean_last,
            )
        elif isinstance(model, RBM):
            out = _rbm_frames(model, n_steps, n, c, gibbs_steps, gen, mean_last)
            if p is not None:
                out = torch.cat([p[None].to(out.dtype).expand(n, -1, -1), out], 1)
        else:
            raise InputTypeError(
                error_message(
                    "model",
                    "a temporal model (rnn-rbm, rtrbm, lstm-rtrbm, rnn-nade) or an rbm",
                    type(model).__name__,
                    "pass a checkpoint trained on piano-rolls",
                )
            )
    return out.float().cpu().numpy()


def _rbm_frames(
    rbm: RBM,
    n_steps: int,
    n: int,
    clamp: tuple[Tensor, Tensor] | None,
    steps: int,
    gen: torch.Generator,
    mean_last: bool,
) -> Tensor:
    """Independent frames from an RBM: all ``n · n_steps`` chains in one batched call."""
    rows = n * n_steps
    c = None
    if clamp is not None:
        c = tuple(x.expand(n, -1, -1).reshape(rows, -1) for x in clamp)
    draw = rbm.frame.expected_visible if mean_last else rbm.frame.sample
    v = draw(None, steps, gen, c, n=rows)  # type: ignore[arg-type]
    return v.reshape(n, n_steps, -1)


# ------------------------------------------------------------------------------ writing
def _shift_columns(x: np.ndarray, semitones: int) -> np.ndarray:
    """Shift a ``(T, 88)`` array of any dtype by ``semitones`` keys, zero-filling."""
    out = np.zeros_like(x)
    s = int(semitones)
    if abs(s) >= N_KEYS:
        return out
    if s >= 0:
        out[:, s:] = x[:, : N_KEYS - s]
    else:
        out[:, :s] = x[:, -s:]
    return out


def write_piece(
    roll: np.ndarray,
    out_dir: str | os.PathLike[str],
    stem: str = "sample",
    *,
    frames_per_beat: int = 2,
    tempo_bpm: float = 120.0,
    title: str | None = None,
    image: np.ndarray | None = None,
    synth: Literal["auto", "additive", "fluidsynth"] = "auto",
) -> dict[str, Path]:
    """Write ``stem.mid``, ``stem.wav`` and ``stem.png`` into ``out_dir``; all or nothing.

    ``roll`` ``(T, 88)`` binary is written as MIDI and audio; ``image`` (default ``roll``) may
    hold probabilities in [0, 1] for the PNG. Returns ``{"midi", "wav", "png"}`` → path.
    """
    return _write_all([(roll, stem, image, title)], out_dir, frames_per_beat, tempo_bpm, synth)[0]


def _output_folder(out_dir: str | os.PathLike[str]) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(
            error_message(
                f"output folder {str(out)!r}", "a folder", "an existing file", "pass a folder path"
            )
        )
    return out


def _write_all(
    pieces: Sequence[tuple[np.ndarray, str, np.ndarray | None, str | None]],
    out_dir: str | os.PathLike[str],
    frames_per_beat: int,
    tempo_bpm: float,
    synth: Literal["auto", "additive", "fluidsynth"],
) -> list[dict[str, Path]]:
    """Stage every file in a hidden folder inside ``out_dir``, then move them all into place."""
    out = _output_folder(out_dir)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".rnnrbm-staging-", dir=out))
    moved: list[Path] = []
    try:
        staged = []
        for roll, stem, image, title in pieces:
            roll = check_roll(roll)
            files = {
                "midi": roll_to_midi(
                    roll,
                    stage / f"{stem}.mid",
                    frames_per_beat=frames_per_beat,
                    tempo_bpm=tempo_bpm,
                ),
                "wav": render_wav(
                    roll,
                    stage / f"{stem}.wav",
                    frames_per_beat=frames_per_beat,
                    tempo_bpm=tempo_bpm,
                    synth=synth,
                ).path,
                "png": save_piano_roll(
                    roll if image is None else image,
                    stage / f"{stem}.png",
                    title=title,
                    frames_per_beat=frames_per_beat,
                ),
            }
            staged.append(files)
        result = []
        for files in staged:
            final = {}
            for kind, path in files.items():
                target = out / path.name
                os.replace(path, target)
                moved.append(target)
                final[kind] = target
            result.append(final)
        return result
    except BaseException:
        for path in moved:
            path.unlink(missing_ok=True)
        if created:
            shutil.rmtree(stage, ignore_errors=True)
            if not any(out.iterdir()):
                out.rmdir()
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@dataclass
class GeneratedPiece:
    """What :func:`generate_music` produced: rolls ``(n, T, 88)`` and the files per piece."""

    rolls: np.ndarray
    paths: list[dict[str, Path]]
    primer_frames: int
    transposition: int
    frames_per_beat: int
    tempo_bpm: float
    info: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pieces": [{k: str(v) for k, v in p.items()} for p in self.paths],
            "frames": int(self.rolls.shape[1]),
            "primer_frames": self.primer_frames,
            "transposition_semitones": self.transposition,
            "frames_per_beat": self.frames_per_beat,
            "tempo_bpm": self.tempo_bpm,
            **self.info,
        }


def generate_music(
    model: MusicModel,
    out_dir: str | os.PathLike[str],
    *,
    steps: int | None = None,
    gibbs_steps: int = 25,
    primer: Primer | None = None,
    melody: Primer | None = None,
    melody_on_top: bool = True,
    n: int = 1,
    seed: int = 0,
    mean_last: bool = False,
    frames_per_beat: int = 2,
    tempo_bpm: float = 120.0,
    stem: str = "sample",
    synth: Literal["auto", "additive", "fluidsynth"] = "auto",
) -> GeneratedPiece:
    """Sample ``n`` pieces and write each as MIDI, WAV and PNG (``stem.*`` or ``stem_NN.*``).

    ``steps`` defaults to 200, or with a ``melody`` (harmonisation) to the melody's length; a
    longer piece continues freely after the melody ends, a shorter one cuts it. Output is
    shifted back by the primer's (else the melody's) transposition, into the key the user gave.
    """
    if melody is not None and steps is None:
        steps = len(melody.roll)
    steps = check_positive_int(steps if steps is not None else 200, "steps")
    clamp = None
    if melody is not None:
        mask, values = melody_clamp(melody.roll, on_top=melody_on_top)
        pad = max(steps - len(mask), 0)
        mask = np.pad(mask[:steps], ((0, pad), (0, 0)))
        values = np.pad(values[:steps], ((0, pad), (0, 0)))
        clamp = (mask, values)
    rolls = generate_rolls(
        model,
        steps,
        primer=None if primer is None else primer.roll,
        clamp=clamp,
        gibbs_steps=gibbs_steps,
        n=n,
        seed=seed,
        mean_last=mean_last,
    )
    shift = primer.transposition if primer is not None else 0
    if primer is None and melody is not None:
        shift = melody.transposition
    pieces = []
    for i, r in enumerate(rolls):
        image = _shift_columns(r, -shift)
        binary = image >= 0.5
        name = stem if n == 1 else f"{stem}_{i:02d}"
        title = f"{name}: {len(r)} frames" + (f", primer {primer.source}" if primer else "")
        title += f", melody {melody.source}" if melody else ""
        pieces.append((binary, name, image if mean_last else None, title))
    paths = _write_all(pieces, out_dir, frames_per_beat, tempo_bpm, synth)
    out_rolls = np.stack([p[0] for p in pieces]).astype(np.float32)
    info: dict[str, Any] = {"seed": seed, "gibbs_steps": gibbs_steps, "mean_last": mean_last}
    if primer is not None:
        info["primer"] = primer.source
    if melody is not None:
        info["melody"] = melody.source
    return GeneratedPiece(
        out_rolls, paths, 0 if primer is None else len(primer.roll), shift, frames_per_beat,
        tempo_bpm, info,
    )  # fmt: skip
