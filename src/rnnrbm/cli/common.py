"""What every subcommand shares: output, errors, loading a music checkpoint and its framing."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnrbm.validation import InputError, error_message

DATA_HELP = (
    "jsb | nottingham | musedata | piano-midi | a .json.gz/.pickle file | a MIDI file or folder"
)
# Framing of a checkpoint that carries none (written outside a recipe run, or by an older
# version without a run.json beside it): the MIDI reader's defaults, stated on stderr.
FALLBACK_FRAMING = {"frames_per_beat": 2, "tempo_bpm": 120.0, "transpose_to_c": True}


def emit(args: argparse.Namespace, result: dict[str, Any], lines: Sequence[str]) -> None:
    """``--json``: one JSON object on stdout; otherwise the human-readable lines."""
    if args.json:
        print(json.dumps(result, default=str))
    else:
        for line in lines:
            print(line)


def note(args: argparse.Namespace, line: str) -> None:
    """A side remark (skipped files, fallbacks): stderr, so ``--json`` stdout stays clean."""
    print(f"rnnrbm {args.command}: {line}", file=sys.stderr)


def user_error(what: str, expected: str, got: str, fix: str) -> InputError:
    return InputError(error_message(what, expected, got, fix))


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object of results")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks on errors")


def add_midi_flags(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--frames-per-beat",
        type=int,
        default=None,
        help=f"frames per beat when reading {what} (default: the checkpoint's framing)",
    )
    p.add_argument(
        "--no-transpose",
        action="store_true",
        help=f"keep {what} in its key (default: as the training data, moved to C)",
    )
    p.add_argument("--sustain", action="store_true", help="apply the sustain pedal (CC64)")


@dataclass
class MusicCheckpoint:
    """A loaded music model with the recipe and framing it was trained with."""

    path: str
    model: Any
    recipe: Any  # rnnrbm.recipes.Recipe | None
    framing: dict[str, Any]
    framing_source: str  # "checkpoint" | "run.json" | "default"


def _legacy_framing(path: Path) -> dict[str, Any] | None:
    """The data framing of a checkpoint written before checkpoints carried it: the
    ``run.json`` that ``rnnrbm train`` wrote beside it, when present."""
    try:
        info = json.loads((path.parent / "run.json").read_text(encoding="utf-8"))
        data = info["data"]
        return {
            "dataset": data.get("name", ""),
            "source": data.get("spec", ""),
            "frames_per_beat": int(data["frames_per_beat"]),
            "tempo_bpm": FALLBACK_FRAMING["tempo_bpm"],
            "transpose_to_c": bool(data.get("transpose_to_c", True)),
            "sustain": bool(data.get("apply_sustain", False)),
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def load_music_checkpoint(
    args: argparse.Namespace, path: str, device: str | None
) -> MusicCheckpoint:
    """A checkpoint's model, checked to be a model of 88-key piano-roll frames, and its framing
    (the checkpoint's own; else a ``run.json`` beside it; else the stated fallback)."""
    from rnnrbm.checkpoint import load_checkpoint
    from rnnrbm.models import RBM, SequenceModel
    from rnnrbm.recipes import Recipe
    from rnnrbm.validation import resolve_device

    ck = load_checkpoint(path, device=resolve_device(device))
    model = ck.model
    ok = isinstance(model, SequenceModel) or (
        isinstance(model, RBM) and getattr(model, "visible", "") == "bernoulli"
    )
    if not ok or model.n_visible != 88:
        raise user_error(
            f"checkpoint {path}",
            "a music model (rnn-rbm, rtrbm, lstm-rtrbm, rnn-nade or rbm) of 88 keys",
            f"a {ck.meta.get('model_type')} with {getattr(model, 'n_visible', '?')} visible units",
            "pass a checkpoint written by `rnnrbm train`",
        )
    model.eval()
    recipe = None if ck.recipe is None else Recipe.from_dict(ck.recipe, where=f"{path} recipe")
    framing, source = ck.framing, "checkpoint"
    if framing is None:
        framing, source = _legacy_framing(Path(path)), "run.json"
    if framing is None:
        framing, source = dict(FALLBACK_FRAMING), "default"
        note(
            args,
            f"{path} does not record how its data were framed; assuming "
            f"{FALLBACK_FRAMING['frames_per_beat']} frames per beat at "
            f"{FALLBACK_FRAMING['tempo_bpm']:g} bpm (set --frames-per-beat / --tempo)",
        )
    return MusicCheckpoint(path, model, recipe, framing, source)


def midi_options(args: argparse.Namespace, framing: dict[str, Any]) -> Any:
    """How to read MIDI for a model: the training data's framing unless a flag overrides it."""
    from rnnrbm.music.midi import MidiReadOptions

    return MidiReadOptions(
        frames_per_beat=args.frames_per_beat or int(framing.get("frames_per_beat", 2)),
        transpose_to_c=bool(framing.get("transpose_to_c", True)) and not args.no_transpose,
        apply_sustain=args.sustain or bool(framing.get("sustain", False)),
    )


def runs_gap_text(nll: dict[str, Any]) -> str:
    """How far the AIS figure moved when its runs doubled, and a warning when that is large."""
    gap = nll.get("runs_gap")
    if gap is None:
        return ""
    warning = "" if nll.get("converged", True) else " — AIS NOT converged, use more runs / β"
    return f"; doubling the runs moved it {gap:+.3f}{warning}"


def print_skipped(args: argparse.Namespace, skipped: Sequence[tuple[str, str]]) -> None:
    for f, reason in skipped:
        note(args, f"skipped {f}: {reason}")


STATISTICS_SHOWN = (  # (key, label, format) of the sample-quality statistics in text output
    ("polyphony", "polyphony (notes/non-empty frame)", "{:.2f}"),
    ("empty_frame_rate", "empty frames", "{:.1%}"),
    ("pitch_range", "pitch range (semitones)", "{}"),
    ("pitch_class_entropy", "pitch-class entropy (bits)", "{:.2f}"),
    ("scale_consistency", "scale consistency", "{:.1%}"),
    ("mean_note_length", "mean note length (frames)", "{:.2f}"),
    ("held_from_previous", "held from the previous frame", "{:.1%}"),
)


def statistics_lines(stats: dict[str, Any]) -> list[str]:
    """Text lines comparing the sample-quality statistics of the generated music with the
    data's (``stats``: ``{"generated": …, "reference": … | None}``)."""
    gen, ref = stats["generated"], stats.get("reference")
    head = "statistics: generated" + (f" | {ref['source']} {ref['split']}" if ref else "")
    lines = [head]
    for key, label, fmt in STATISTICS_SHOWN:
        text = fmt.format(gen[key]) + (f" | {fmt.format(ref[key])}" if ref else "")
        lines.append(f"  {label}: {text}")
    return lines


def reference_statistics(
    args: argparse.Namespace, framing: dict[str, Any]
) -> dict[str, Any] | None:
    """Sample-quality statistics of the checkpoint's data (its test split, else valid), to set
    beside generated music; None (with a note) when the data cannot be read here."""
    from rnnrbm.data.music_data import load_music_data
    from rnnrbm.music.statistics import roll_statistics
    from rnnrbm.validation import DataFormatError

    source = framing.get("source")
    if not source:
        return None
    try:
        data = load_music_data(source, options=midi_options(args, framing))
    except (OSError, InputError, DataFormatError) as exc:
        note(args, f"no data statistics: {source} cannot be read here ({type(exc).__name__})")
        return None
    split = next((s for s in ("test", "valid") if data.dataset.splits.get(s)), None)
    if split is None:
        return None
    return {"source": str(source), "split": split, **roll_statistics(data.dataset[split])}
