"""``rnnrbm generate``: sample pieces from a checkpoint and write MIDI, WAV and a piano-roll PNG.

Pieces play at the checkpoint's frames per beat and tempo (its data framing) unless
``--frames-per-beat`` / ``--tempo`` say otherwise.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rnnrbm.cli.common import (
    add_midi_flags,
    emit,
    load_music_checkpoint,
    midi_options,
    reference_statistics,
    statistics_lines,
    user_error,
)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("generate", parents=[common], help="sample music from a checkpoint")
    p.add_argument("checkpoint", help="a .safetensors checkpoint written by `rnnrbm train`")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="frames (default: the recipe's; --clamp: its length)",
    )
    p.add_argument("--gibbs-steps", type=int, default=None, help="Gibbs steps per frame (25)")
    p.add_argument("--primer", help="a MIDI file, or a dataset sequence DATA[:SPLIT[:INDEX]]")
    p.add_argument("--primer-frames", type=int, default=None, help="first N primer frames")
    p.add_argument("--clamp", help="a melody MIDI file to harmonise (its notes are held fixed)")
    p.add_argument(
        "--melody-anywhere",
        action="store_true",
        help="let harmony notes go above the melody (default: the melody stays on top)",
    )
    p.add_argument("--n", type=int, default=1, help="number of pieces")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--mean-last",
        action="store_true",
        help="finish each frame with its mean (MIDI/WAV: keys ≥ 0.5; PNG: the probabilities)",
    )
    p.add_argument("--tempo", type=float, default=None, help="beats per minute (the checkpoint's)")
    p.add_argument("--name", default="sample", help="file stem (default: sample)")
    p.add_argument("--synth", choices=("auto", "additive", "fluidsynth"), default="auto")
    p.add_argument("--device", default="cpu")
    add_midi_flags(p, "the primer and melody (and the output)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rnnrbm.generation import generate_music, load_primer
    from rnnrbm.music.statistics import roll_statistics
    from rnnrbm.recipes.schema import GenerationSpec

    start = time.perf_counter()
    if not args.name or Path(args.name).name != args.name or args.name.startswith("."):
        raise user_error("--name", "a plain file stem such as 'sample'", repr(args.name), "fix it")
    ck = load_music_checkpoint(args, args.checkpoint, args.device)
    spec = ck.recipe.generation if ck.recipe is not None else GenerationSpec()
    opts = midi_options(args, ck.framing)
    tempo = args.tempo or float(ck.framing.get("tempo_bpm", 120.0))
    primer = melody = None
    if args.primer is not None:
        primer = load_primer(args.primer, args.primer_frames, options=opts)
    if args.clamp is not None:
        melody = load_primer(args.clamp, None, options=opts)
    steps = args.steps if args.steps is not None or melody is not None else spec.steps
    piece = generate_music(
        ck.model,
        args.out,
        steps=steps,
        gibbs_steps=args.gibbs_steps or spec.gibbs_steps,
        primer=primer,
        melody=melody,
        melody_on_top=not args.melody_anywhere,
        n=args.n,
        seed=args.seed,
        mean_last=args.mean_last,
        frames_per_beat=opts.frames_per_beat,
        tempo_bpm=tempo,
        stem=args.name,
        synth=args.synth,
    )
    new_frames = piece.rolls[:, piece.primer_frames :] >= 0.5  # the primer is the user's
    statistics = {
        "generated": roll_statistics(list(new_frames)),
        "reference": reference_statistics(args, ck.framing),
    }
    res = {
        "command": "generate",
        "checkpoint": args.checkpoint,
        "framing_source": ck.framing_source,
        **piece.as_dict(),
        "statistics": statistics,
        "seconds": round(time.perf_counter() - start, 2),
    }
    lines = [
        f"generated {args.n} piece(s) of {res['frames']} frames at {opts.frames_per_beat} "
        f"frame(s) per beat, {tempo:g} bpm"
    ]
    for p in res["pieces"]:
        lines += [f"wrote {k}: {v}" for k, v in p.items()]
    lines += statistics_lines(statistics)
    emit(args, res, lines)
    return 0
