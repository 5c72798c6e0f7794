"""``rnnrbm prepare``: parse a MIDI folder once, in parallel, into a corpus to train from.

The corpus (``--out``) holds the piano rolls in a few shard files and an index (source path,
content hash, frames, key, split); ``rnnrbm train --data CORPUS_DIR`` trains from it. A re-run
parses only new or changed files. Malformed files are skipped and listed with their reasons;
the exit status says whether any were.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from rnnrbm.cli.common import emit, print_skipped
from rnnrbm.data.corpus import MIN_FILES_PER_WORKER, prepare_corpus
from rnnrbm.music.midi import MidiReadOptions

DESCRIPTION = (
    "Parse the MIDI files below MIDI_DIR (in parallel) into a corpus: piano rolls in a few shard "
    "files and an index (source path, content hash, frames, key, split). A re-run parses only "
    "new or changed files. Train from it with: rnnrbm train --data CORPUS_DIR."
)
EPILOG = (
    "exit status: 0 every MIDI file is in the corpus; 1 the corpus was written but some files "
    "were skipped (each listed on stderr, and under 'skipped' with --json, with its reason); "
    "2 a usage error (nothing written)"
)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "prepare",
        parents=[common],
        help="parse a MIDI folder into a corpus (shards + index) for fast training",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    p.add_argument("midi_dir", metavar="MIDI_DIR", help="folder of .mid/.midi files (recursive)")
    p.add_argument(
        "--out",
        required=True,
        metavar="CORPUS_DIR",
        help="corpus folder: created, or an existing corpus updated",
    )
    cores = os.cpu_count() or 1
    p.add_argument(
        "--workers",
        type=int,
        default=cores,
        help=f"parsing processes, at most one per {MIN_FILES_PER_WORKER} new files "
        f"(default: {cores})",
    )
    p.add_argument(
        "--frames-per-beat", type=int, default=2, help="frames per beat (default: 2, eighths)"
    )
    p.add_argument("--no-transpose", action="store_true", help="keep each piece in its key")
    p.add_argument("--sustain", action="store_true", help="apply the sustain pedal (CC64)")
    p.add_argument("--valid-fraction", type=float, default=0.1, help="share of pieces in valid")
    p.add_argument("--test-fraction", type=float, default=0.1, help="share of pieces in test")
    p.add_argument(
        "--shard-frames", type=int, default=1_000_000, help="frames per shard file (about)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options = MidiReadOptions(
        frames_per_beat=args.frames_per_beat,
        transpose_to_c=not args.no_transpose,
        apply_sustain=args.sustain,
    )
    report = prepare_corpus(
        args.midi_dir,
        args.out,
        options=options,
        workers=args.workers,
        shard_frames=args.shard_frames,
        valid_fraction=args.valid_fraction,
        test_fraction=args.test_fraction,
        progress=not args.json,
    )
    print_skipped(args, report.skipped)
    res = {"command": "prepare", **report.as_dict()}
    splits = ", ".join(
        f"{s} {v['pieces']} ({v['frames']} frames)" for s, v in report.splits.items()
    )
    emit(
        args,
        res,
        [
            f"corpus {report.out_dir}: {report.pieces} pieces, {report.frames} frames "
            f"in {report.shards} shards ({splits})",
            f"files: {report.files} found, {report.parsed} parsed, {report.cached} cached, "
            f"{len(report.skipped)} skipped",
            f"done in {res['seconds']} s ({res['files_per_s']} files/s, "
            f"{res['frames_per_s']} frames/s)",
            f"next: rnnrbm train --model rnn-rbm --data {report.out_dir} --out RUN_DIR",
        ],
    )
    return 1 if report.skipped else 0
