"""``rnnrbm score``: log-likelihood per frame of a MIDI file under a trained model."""

from __future__ import annotations

import argparse
from typing import Any

from rnnrbm.cli.common import add_midi_flags, emit, load_music_checkpoint, midi_options


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("score", parents=[common], help="log-likelihood per frame of a MIDI file")
    p.add_argument("checkpoint")
    p.add_argument("file", help="a MIDI file")
    p.add_argument("--method", choices=("auto", "exact", "ais", "raise"), default="auto")
    p.add_argument("--ais-runs", type=int, default=100)
    p.add_argument("--ais-betas", type=int, default=1000)
    p.add_argument("--per-frame", action="store_true", help="print every frame's value")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    add_midi_flags(p, "the file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rnnrbm.evaluation import score_midi

    ck = load_music_checkpoint(args, args.checkpoint, args.device)
    report = score_midi(
        ck.model,
        args.file,
        options=midi_options(args, ck.framing),
        method=args.method,
        ais_runs=args.ais_runs,
        ais_betas=args.ais_betas,
        seed=args.seed,
    )
    res = {"command": "score", "checkpoint": args.checkpoint, **report.as_dict()}
    pm = f" ± {report.se:.3f}" if report.se > 0 else ""
    lines = [
        f"{args.file}: log-likelihood {report.mean:.4f}{pm} nats per frame "
        f"over {report.n_frames} frames ({report.estimator}); "
        f"transposed {report.transposition:+d} semitones"
    ]
    if args.per_frame:
        lines += [f"frame {t}: {v:.4f}" for t, v in enumerate(report.per_frame)]
    emit(args, res, lines)
    return 0
