"""The ``rnnrbm`` command line: a thin layer over the library, one module per subcommand.

    rnnrbm recipes                                   the bundled recipes and what they reach
    rnnrbm prepare   MIDI_DIR --out CORPUS_DIR       parse a MIDI folder once into a corpus
    rnnrbm train     --recipe NAME --out DIR         train (or --model M --data D: best defaults)
    rnnrbm evaluate  CKPT                            the benchmark protocol on the checkpoint's data
    rnnrbm generate  CKPT --out DIR                  sample music: MIDI, WAV, piano-roll PNG
    rnnrbm score     CKPT FILE.mid                   log-likelihood per frame of a MIDI file
    rnnrbm demo                                      RNN-RBM on JSB Chorales, on CPU
    rnnrbm demo-digits                               an RBM / DBN / DBM on 8×8 digits
    rnnrbm env                                       versions, device, threads (for bug reports)

argparse (standard library) keeps the CLI dependency-free and its help text plain. Every command
takes ``--json`` and then prints exactly one JSON object on stdout (progress goes to stderr, or is
off); user errors are one line on stderr naming the file or field and the fix, with exit code 2
(``--verbose`` shows the traceback); an interrupted ``train`` exits 130 and leaves a resumable
checkpoint. Commands write their files atomically: an error leaves no partial output.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import rnnrbm
from rnnrbm.cli import (
    demo,
    demo_digits,
    env,
    evaluate,
    generate,
    list_recipes,
    prepare,
    score,
    train,
)
from rnnrbm.cli.common import add_common
from rnnrbm.validation import (
    CheckpointError,
    DataFormatError,
    InputError,
    InputTypeError,
    NonFiniteError,
)

__all__ = ["build_parser", "main"]

USER_ERRORS = (
    InputError,
    InputTypeError,
    DataFormatError,
    CheckpointError,
    FileNotFoundError,
    NonFiniteError,
)
COMMANDS = (list_recipes, prepare, train, evaluate, generate, score, demo, demo_digits, env)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnrbm", description="Energy-based models of binary data and sequences."
    )
    parser.add_argument("--version", action="version", version=f"rnnrbm {rnnrbm.__version__}")
    common = argparse.ArgumentParser(add_help=False)
    add_common(common)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except USER_ERRORS as exc:
        if args.verbose:
            raise
        message = " ".join(str(exc).split())  # one line, whatever the library wrote
        print(f"rnnrbm {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rnnrbm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
