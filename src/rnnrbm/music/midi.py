"""MIDI ↔ piano-roll through pretty_midi (on mido): beat-aligned frames, corrupt-file bounds.

Reading (:func:`read_midi`) samples a Standard MIDI File on a grid that follows the file's tempo
map and time-signature changes, so a frame is a fixed fraction of a beat whatever the tempo:

* ``beat="meter"`` (default) takes the beats from pretty_midi's ``get_beats()``: the beat is the
  meter's counting unit (a quarter in 3/4 and 4/4, a half in 2/2, a dotted quarter in 6/8, an
  eighth in 3/8), and a time-signature change restarts the count. ``beat="quarter"`` always
  counts quarter notes through the tempo map, whatever the meter.
* each beat is split linearly into ``frames_per_beat`` frames ``[t_f, t_{f+1})``;
* a note is on in every frame it covers for more than half the frame, and a note that covers no
  frame that much (a grace note, a 32nd staccato) is on in the one frame holding its midpoint, so
  short notes are never lost (rule of :func:`rnnrbm.music.pianoroll.quantise`);
* the roll runs from time 0 to the file's last event of the kept material (kept instruments'
  notes, control changes and pitch bends, meta events, tempo changes).

Before anything is allocated the file's size, header and chunk table are checked; after mido
parses it the tick range, note count and tempi are checked; any problem raises
:class:`MidiFileError` naming the file, the problem and the fix, never a raw mido/pretty_midi
exception.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import mido
import numpy as np
import pretty_midi

from rnnrbm.files import atomic_write
from rnnrbm.music.pianoroll import (
    HIGHEST_PITCH,
    LOWEST_PITCH,
    Key,
    check_roll,
    key_correlations,
    quantise,
    roll_from_notes,
    roll_to_notes,
    shift_to_c,
)
from rnnrbm.validation import DataFormatError, InputError, check_choice, error_message

__all__ = [
    "MAX_FRAMES_PER_BEAT",
    "MidiBounds",
    "MidiFileError",
    "MidiReadOptions",
    "MidiRoll",
    "is_midi_path",
    "read_midi",
    "read_midi_folder",
    "roll_to_midi",
    "roll_to_pretty_midi",
]

MAX_FRAMES_PER_BEAT = 96
_SUSTAIN_CC = 64  # damper pedal: value ≥ 64 is down
_END_MARKER = "rnnrbm: end of roll"  # text event that keeps trailing silent frames on write


class MidiFileError(DataFormatError):
    """A MIDI file is missing, corrupt, or outside the sanity bounds; the message names it."""


def _fail(path: Path, expected: str, got: str, fix: str) -> MidiFileError:
    return MidiFileError(error_message(f"MIDI file {str(path)!r}", expected, got, fix))


@dataclass(frozen=True)
class MidiBounds:
    """Sanity bounds checked before (file, header) and right after (events) parsing.

    The defaults admit any real piece (hours long, orchestral) and reject what would exhaust
    memory or time: pretty_midi allocates 8 bytes per tick of the file's length, hence
    ``max_ticks`` (its own hard limit is 10⁷).
    """

    max_file_bytes: int = 16 * 2**20
    max_tracks: int = 1024
    max_ticks_per_beat: int = 32767  # the format's largest metrical division
    max_ticks: int = 10_000_000
    max_beats: int = 100_000  # ticks / ticks-per-beat: about 14 hours at 120 bpm
    max_tempo_changes: int = 100_000
    max_notes: int = 2_000_000
    max_seconds: float = 4 * 3600.0
    min_bpm: float = 1.0
    max_bpm: float = 1000.0


@dataclass(frozen=True)
class MidiReadOptions:
    """How :func:`read_midi` turns a file into a roll.

    ``frames_per_beat``: 2 = eighth notes in 4/4 (1 for chorale-like data). ``beat``: "meter"
    (pretty_midi's beats, following time signatures) or "quarter" (quarter notes, any meter).
    ``apply_sustain``: the damper pedal (CC64 ≥ 64) holds a note released under it until the
    pedal is lifted. ``transpose_to_c``: shift to C major / C minor by the nearest shift in
    −5..+6. ``key_from``: "auto" = the first key-signature event when there is one, else the
    Krumhansl–Schmuckler estimate; "signature" = events only (no key, no shift, without one);
    "estimate" = always estimate.
    """

    frames_per_beat: int = 2
    beat: Literal["meter", "quarter"] = "meter"
    drop_drums: bool = True
    apply_sustain: bool = False
    transpose_to_c: bool = False
    key_from: Literal["auto", "signature", "estimate"] = "auto"
    bounds: MidiBounds = field(default_factory=MidiBounds)

    def __post_init__(self) -> None:
        fpb = self.frames_per_beat
        if isinstance(fpb, bool) or not isinstance(fpb, int) or not 1 <= fpb <= MAX_FRAMES_PER_BEAT:
            raise InputError(
                error_message(
                    "frames_per_beat",
                    f"an integer in 1..{MAX_FRAMES_PER_BEAT}",
                    repr(fpb),
                    "use 2 (eighth notes) or 1 (one frame per beat, e.g. chorales)",
                )
            )
        for name, value, allowed in (
            ("beat", self.beat, ("meter", "quarter")),
            ("key_from", self.key_from, ("auto", "signature", "estimate")),
        ):
            check_choice(value, name, allowed)


@dataclass
class MidiRoll:
    """A piece read from MIDI.

    ``roll`` (T, 88) bool; ``frame_times`` (T + 1,) frame boundaries in seconds of the file;
    ``dropped_out_of_range``: notes outside MIDI 21..108 after any transposition;
    ``transposition``: semitones applied; ``key``: the piece's key *before* transposition, with
    ``key_source`` "signature", "estimate" or "none" (empty piece, or no signature when
    ``key_from="signature"``); ``warnings``: what mido/pretty_midi warned about while reading.
    """

    roll: np.ndarray
    frames_per_beat: int
    frame_times: np.ndarray
    dropped_out_of_range: int
    transposition: int
    key: Key | None
    key_source: str
    source: Path
    warnings: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# Checks before and right after parsing


def _read_checked_bytes(path: Path, bounds: MidiBounds) -> bytes:
    """Read the file after checking that it exists and its size is sane."""
    try:
        size = path.stat().st_size if path.is_file() else None
    except OSError as exc:
        raise _fail(path, "a readable file", f"{type(exc).__name__}: {exc}", "check it") from exc
    if size is None:
        raise _fail(path, "an existing file", "no file at that path", "check the path")
    if size == 0:
        raise _fail(path, "a Standard MIDI File", "an empty file (0 bytes)", "re-export it")
    if size > bounds.max_file_bytes:
        raise _fail(
            path,
            f"at most {bounds.max_file_bytes} bytes (MidiBounds.max_file_bytes)",
            f"{size} bytes",
            "check that it is a MIDI file, or raise MidiBounds.max_file_bytes",
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _fail(
            path, "a readable file", f"{type(exc).__name__}: {exc}", "check its permissions"
        ) from exc


def _clean_chunks(path: Path, data: bytes, bounds: MidiBounds) -> bytes:
    """Validate the MThd header and walk the chunk table; return MThd + the MTrk chunks.

    Chunk lengths are checked against the bytes actually present, so a truncated file or a
    declared length of gigabytes is caught here, before mido reads anything. Unknown chunk types
    (allowed by the standard) are skipped.
    """
    bad_header = "re-export the file as a Standard MIDI File (.mid)"
    if data[:4] == b"MThd" and len(data) < 14:
        raise _fail(
            path,
            "a 14-byte MThd header",
            f"only {len(data)} bytes",
            "the file is truncated: re-download or re-export it",
        )
    if data[:4] != b"MThd":
        got = f"{len(data)} bytes starting with {data[:8]!r}"
        raise _fail(path, "a Standard MIDI File starting with b'MThd'", got, bad_header)
    (hlen,) = struct.unpack(">L", data[4:8])
    fmt, ntrks, division = struct.unpack(">HHH", data[8:14])
    if hlen < 6 or 8 + hlen > len(data):
        raise _fail(path, "an MThd header of 6 bytes", f"a declared length of {hlen}", bad_header)
    if fmt > 2:
        raise _fail(path, "format 0, 1 or 2", f"format {fmt}", bad_header)
    if not 1 <= ntrks <= bounds.max_tracks:
        raise _fail(
            path,
            f"1..{bounds.max_tracks} tracks (MidiBounds.max_tracks)",
            f"a header declaring {ntrks}",
            bad_header,
        )
    if division & 0x8000:
        raise _fail(
            path,
            "metrical timing (ticks per quarter note)",
            "SMPTE time-code timing, which has no beats",
            "re-export with musical (bars/beats) timing",
        )
    if not 1 <= division <= bounds.max_ticks_per_beat:
        raise _fail(
            path,
            f"1..{bounds.max_ticks_per_beat} ticks per beat (MidiBounds.max_ticks_per_beat)",
            f"{division}",
            bad_header,
        )
    pos, tracks = 8 + hlen, []
    while pos < len(data) and len(tracks) < ntrks:
        if pos + 8 > len(data):
            break
        kind, length = struct.unpack(">4sL", data[pos : pos + 8])
        if pos + 8 + length > len(data):
            raise _fail(
                path,
                f"chunk {kind!r} at byte {pos} to fit in the file",
                f"a declared length of {length} bytes with {len(data) - pos - 8} remaining",
                "the file is truncated or corrupt: re-download or re-export it",
            )
        if kind == b"MTrk":
            tracks.append(data[pos : pos + 8 + length])
        pos += 8 + length
    if len(tracks) < ntrks:
        raise _fail(
            path,
            f"{ntrks} track chunks (as its header declares)",
            f"{len(tracks)} complete ones",
            "the file is truncated or corrupt: re-download or re-export it",
        )
    header = b"MThd" + struct.pack(">LHHH", 6, fmt, len(tracks), division)
    return header + b"".join(tracks)


def _check_events(path: Path, mid: mido.MidiFile, bounds: MidiBounds) -> None:
    """Length, note count and tempi from the parsed events, before pretty_midi allocates."""
    max_tick = n_notes = n_tempi = 0
    for track in mid.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            kind = msg.type
            if kind == "note_on":
                n_notes += msg.velocity > 0
            elif kind == "set_tempo":
                n_tempi += 1
                bpm = 6e7 / msg.tempo if msg.tempo > 0 else float("inf")
                if not bounds.min_bpm <= bpm <= bounds.max_bpm:
                    raise _fail(
                        path,
                        f"tempi in {bounds.min_bpm:g}..{bounds.max_bpm:g} bpm (MidiBounds)",
                        f"{bpm:.4g} bpm ({msg.tempo} µs per beat) at tick {tick}",
                        "fix the tempo event in a MIDI editor, or widen the bounds",
                    )
            elif kind == "time_signature" and msg.numerator == 0:
                raise _fail(
                    path, "time signatures n/d with n ≥ 1", f"0/{msg.denominator}", "fix it"
                )
        max_tick = max(max_tick, tick)
    tpb = mid.ticks_per_beat
    for what, value, limit in (
        ("ticks (MidiBounds.max_ticks)", max_tick, bounds.max_ticks),
        ("beats (MidiBounds.max_beats)", max_tick // tpb, bounds.max_beats),
        ("notes (MidiBounds.max_notes)", n_notes, bounds.max_notes),
        ("tempo changes (MidiBounds.max_tempo_changes)", n_tempi, bounds.max_tempo_changes),
    ):
        if value > limit:
            raise _fail(
                path,
                f"at most {limit} {what}",
                f"{value}",
                "the file is probably corrupt; if not, raise the bound",
            )


def _parse(path: Path, data: bytes, bounds: MidiBounds) -> pretty_midi.PrettyMIDI:
    """bytes → PrettyMIDI, every library exception turned into a MidiFileError."""
    try:
        mid = mido.MidiFile(file=io.BytesIO(data))
    except Exception as exc:  # mido raises OSError, EOFError, KeyError, ValueError, …
        raise _fail(
            path,
            "well-formed MIDI events",
            f"{type(exc).__name__}: {exc}",
            "the file is corrupt: re-download or re-export it",
        ) from exc
    _check_events(path, mid, bounds)
    try:
        pm = pretty_midi.PrettyMIDI(mido_object=mid)
        end = pm.get_end_time()
    except Exception as exc:
        raise _fail(
            path,
            "events pretty_midi can interpret",
            f"{type(exc).__name__}: {exc}",
            "the file is corrupt: re-download or re-export it",
        ) from exc
    if end > bounds.max_seconds:
        raise _fail(
            path,
            f"at most {bounds.max_seconds:g} s (MidiBounds.max_seconds)",
            f"{end:.1f} s",
            "the file is probably corrupt; if not, raise the bound",
        )
    return pm


# ---------------------------------------------------------------------------------------------
# Frame grid, notes, sustain


def _frame_grid(pm: pretty_midi.PrettyMIDI, end: float, opts: MidiReadOptions) -> np.ndarray:
    """Frame boundaries (T + 1,) in seconds, from 0 to the first boundary ≥ ``end``."""
    fpb = opts.frames_per_beat
    if opts.beat == "meter":
        beats = np.asarray(pm.get_beats(), dtype=np.float64)
        if len(beats) < 2:  # a file with no length: one nominal beat keeps the code uniform
            beats = np.array([0.0, 60.0 / pm.get_tempo_changes()[1][0]])
        step = np.diff(beats)[:, None] * (np.arange(fpb) / fpb)[None, :]
        grid = np.append((beats[:-1, None] + step).ravel(), beats[-1])
        if grid[-1] < end:  # get_beats stops at pm's end time; keep going at the last spacing
            last = grid[-1] - grid[-2]
            extra = int(np.ceil((end - grid[-1]) / last))
            grid = np.append(grid, grid[-1] + last * np.arange(1, extra + 1))
    else:
        # Quarter-note position of every tempo change, then positions k / fpb mapped back to
        # seconds piecewise-linearly, the last tempo continuing past the last change.
        t_c, qpm = (np.asarray(a, dtype=np.float64) for a in pm.get_tempo_changes())
        q_c = np.concatenate([[0.0], np.cumsum(np.diff(t_c) * qpm[:-1] / 60.0)])
        if end >= t_c[-1]:
            q_end = q_c[-1] + (end - t_c[-1]) * qpm[-1] / 60.0
        else:
            q_end = float(np.interp(end, t_c, q_c))
        q = np.arange(max(int(np.ceil(q_end * fpb)), 1) + 1) / fpb
        tail = t_c[-1] + (q - q_c[-1]) * 60.0 / qpm[-1]
        grid = np.where(q <= q_c[-1], np.interp(q, q_c, t_c), tail)
    # T = frames starting before `end` (tolerance: float noise, not music).
    tol = 1e-6 * float(np.median(np.diff(grid)))
    n_frames = int(np.searchsorted(grid, end - tol, side="left"))
    return grid[: n_frames + 1]


def _sustained_ends(inst: pretty_midi.Instrument, ends: np.ndarray) -> np.ndarray:
    """Extend note ends that fall while the damper pedal is down to the pedal's next release."""
    cc = [(c.time, c.value >= 64) for c in inst.control_changes if c.number == _SUSTAIN_CC]
    if not cc:
        return ends
    cc.sort(key=lambda c: c[0])  # stable: events at one time keep their file order
    times = np.array([c[0] for c in cc])
    down = np.array([c[1] for c in cc])
    # Pedal state at each note end = the last pedal event at or before it.
    last = np.searchsorted(times, ends, side="right") - 1
    held = (last >= 0) & down[np.maximum(last, 0)]
    # Next release strictly after each end; a pedal never lifted holds to the instrument's end.
    releases = np.append(times[~down], inst.get_end_time())
    release = releases[np.searchsorted(releases[:-1], ends, side="right")]
    return np.where(held, np.maximum(ends, release), ends)


def _choose_key(
    pm: pretty_midi.PrettyMIDI, hist: np.ndarray, key_from: str
) -> tuple[Key | None, str]:
    """The piece's key and where it came from ("signature", "estimate" or "none").

    A signature is the first key-signature event (pretty_midi key_number 0–11 major, 12–23
    minor on C..B); its correlation is still measured on ``hist`` (NaN without notes).
    """
    usable = bool(np.ptp(hist) > 0)  # some notes, and not every pitch class equally
    r = key_correlations(hist) if usable else np.full(24, np.nan)
    if key_from != "estimate" and pm.key_signature_changes:
        k = min(pm.key_signature_changes, key=lambda ks: ks.time).key_number
        return Key(k % 12, "major" if k < 12 else "minor", float(r[k])), "signature"
    if key_from == "signature" or not usable:
        return None, "none"
    best = int(np.argmax(r))
    return Key(best % 12, "major" if best < 12 else "minor", float(r[best])), "estimate"


def read_midi(path: str | os.PathLike[str], options: MidiReadOptions | None = None) -> MidiRoll:
    """Read a MIDI file into a beat-aligned ``(T, 88)`` bool roll (see the module docstring).

    Raises :class:`MidiFileError` for a missing, empty, truncated, non-MIDI or absurd file.
    """
    opts = options or MidiReadOptions()
    path = Path(path)
    data = _clean_chunks(path, _read_checked_bytes(path, opts.bounds), opts.bounds)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # keep library warnings as data, never raise them
        pm = _parse(path, data, opts.bounds)
        kept = [inst for inst in pm.instruments if not (opts.drop_drums and inst.is_drum)]
        meta = [e.time for m in (pm.time_signature_changes, pm.key_signature_changes) for e in m]
        meta += [e.time for m in (pm.lyrics, pm.text_events) for e in m]
        end = max(
            [inst.get_end_time() for inst in kept] + meta + pm.get_tempo_changes()[0].tolist(),
            default=0.0,
        )
        try:
            grid = _frame_grid(pm, end, opts)
        except Exception as exc:  # pretty_midi's beat tracker on a strange tempo/meter map
            raise _fail(
                path,
                "a tempo map and meter that beats can be counted on",
                f"{type(exc).__name__}: {exc}",
                "fix the time signatures in a MIDI editor, or read with beat='quarter'",
            ) from exc
    n_frames = len(grid) - 1

    # All notes as flat arrays (pitch, onset, offset, is_drum), sustain applied per instrument.
    parts = []
    for inst in kept:
        if not inst.notes:
            continue
        a = np.array([(n.pitch, n.start, n.end) for n in inst.notes], dtype=np.float64)
        ends = _sustained_ends(inst, a[:, 2]) if opts.apply_sustain else a[:, 2]
        parts.append(np.column_stack([a[:, 0], a[:, 1], ends, np.full(len(a), inst.is_drum)]))
    notes = np.concatenate(parts) if parts else np.zeros((0, 4))
    pitch, drum = notes[:, 0].astype(np.int64), notes[:, 3].astype(bool)
    if n_frames > 0 and len(notes):
        start, stop = quantise(notes[:, 1], notes[:, 2], grid)
    else:
        start = stop = np.zeros(len(notes), dtype=np.int64)

    # Key from a signature event or Krumhansl–Schmuckler on the frame-weighted pitch classes of
    # the pitched (non-drum) notes, out-of-range ones included (their pitch class is valid).
    hist = np.bincount(pitch[~drum] % 12, weights=(stop - start)[~drum], minlength=12)
    key, source = _choose_key(pm, hist, opts.key_from)
    shift = shift_to_c(key) if (opts.transpose_to_c and key is not None) else 0

    pitch = pitch + shift
    keep = (pitch >= LOWEST_PITCH) & (pitch <= HIGHEST_PITCH)
    roll = roll_from_notes(np.column_stack([pitch, start, stop])[keep], n_frames)
    return MidiRoll(
        roll=roll,
        frames_per_beat=opts.frames_per_beat,
        frame_times=grid,
        dropped_out_of_range=int((~keep).sum()),
        transposition=shift,
        key=key,
        key_source=source,
        source=path,
        warnings=tuple(dict.fromkeys(str(w.message) for w in caught)),
    )


def is_midi_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a MIDI file by its suffix (``.mid``/``.midi``, any letter case)."""
    return Path(path).suffix.lower() in (".mid", ".midi")


def read_midi_folder(
    folder: str | os.PathLike[str], options: MidiReadOptions | None = None
) -> tuple[list[MidiRoll], list[tuple[Path, str]]]:
    """Read every ``*.mid``/``*.midi`` below ``folder`` (recursive, sorted, any letter case).

    Returns ``(rolls, skipped)``: bad files are skipped and listed as ``(path, reason)``.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(
            error_message("folder", "an existing directory", repr(str(folder)), "check the path")
        )
    files = sorted(p for p in root.rglob("*") if is_midi_path(p) and p.is_file())
    rolls, skipped = [], []
    for p in files:
        try:
            rolls.append(read_midi(p, options))
        except MidiFileError as exc:
            skipped.append((p, str(exc)))
    return rolls, skipped


# ---------------------------------------------------------------------------------------------
# Writing


def roll_to_pretty_midi(
    roll: np.ndarray,
    *,
    frames_per_beat: int = 2,
    tempo_bpm: float = 120.0,
    program: int = 0,
    velocity: int = 80,
) -> pretty_midi.PrettyMIDI:
    """A PrettyMIDI with one note per held run of ``roll`` at a constant tempo, in 4/4.

    Trailing silent frames are kept by a text event at the roll's end, so reading the file back
    gives a roll of the same length.
    """
    roll = check_roll(roll)
    for name, value, lo, hi in (
        ("frames_per_beat", frames_per_beat, 1, MAX_FRAMES_PER_BEAT),
        ("program", program, 0, 127),
        ("velocity", velocity, 1, 127),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise InputError(error_message(name, f"an integer in {lo}..{hi}", repr(value), "fix"))
    if not 1.0 <= float(tempo_bpm) <= 1000.0:
        raise InputError(error_message("tempo_bpm", "1..1000", repr(tempo_bpm), "fix it"))
    # A resolution divisible by frames_per_beat puts every frame boundary on an exact tick.
    resolution = frames_per_beat * -(-480 // frames_per_beat)
    pm = pretty_midi.PrettyMIDI(resolution=resolution, initial_tempo=float(tempo_bpm))
    inst = pretty_midi.Instrument(program=program)
    sec = 60.0 / (float(tempo_bpm) * frames_per_beat)
    inst.notes = [
        pretty_midi.Note(
            velocity=velocity, pitch=n.pitch, start=n.start_frame * sec, end=n.end_frame * sec
        )
        for n in roll_to_notes(roll)
    ]
    pm.instruments.append(inst)
    if len(roll) and not roll[-1].any():
        pm.text_events.append(pretty_midi.Text(_END_MARKER, len(roll) * sec))
    return pm


def roll_to_midi(
    roll: np.ndarray,
    path: str | os.PathLike[str],
    *,
    frames_per_beat: int = 2,
    tempo_bpm: float = 120.0,
    program: int = 0,
    velocity: int = 80,
) -> Path:
    """Write ``roll`` as a MIDI file (one note per held run), atomically; returns the path.

    ``read_midi(path, MidiReadOptions(frames_per_beat=...))`` gives back the same roll.
    """
    pm = roll_to_pretty_midi(
        roll,
        frames_per_beat=frames_per_beat,
        tempo_bpm=tempo_bpm,
        program=program,
        velocity=velocity,
    )
    return atomic_write(path, pm.write)
