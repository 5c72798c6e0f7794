"""``rnnrbm train``: run a recipe — bundled, from a file, or the default for a model and data.

Every flag is a recipe field (``FLAGS``); ``--set KEY=VALUE`` reaches any other. The resolved
recipe is saved as ``OUT/recipe.toml`` and in every checkpoint; ``--resume`` continues the run
in ``OUT`` with the recipe stored in its checkpoint (only ``--epochs``/``--time-budget`` may
change). Ctrl-C stops at the next step boundary with a resumable ``last.safetensors`` (exit 130).

Under ``torchrun --nproc_per_node N -m rnnrbm train …`` the run is data-parallel over N
processes (docs/design.md §11): rank 0 alone prints and writes. ``--resume-if-exists`` continues
the run in ``OUT`` when it has a checkpoint and starts it otherwise, so the one command line
serves a first launch and every restart of ``torchrun --max-restarts K``.

``--data CORPUS_DIR`` (a corpus from ``rnnrbm prepare``) streams it shard by shard when its
train split is large or with ``--set data.stream=on`` (docs/design.md §10): a note on stderr
says so, and the report says what each stage read.
"""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path
from typing import Any

from rnnrbm import distributed
from rnnrbm.cli.common import DATA_HELP, emit, note, print_skipped, user_error
from rnnrbm.recipes.schema import setting

# flag → recipe key; the help text and type come from the recipe schema.
FLAGS: dict[str, str] = {
    "--epochs": "stages.sequence.epochs",
    "--batch-size": "stages.sequence.batch_size",
    "--lr": "stages.sequence.lr",
    "--optimizer": "stages.sequence.optimizer",
    "--weight-decay": "stages.sequence.weight_decay",
    "--clip": "stages.sequence.clip_grad_norm",
    "--lr-decay": "stages.sequence.lr_decay",
    "--lr-patience": "stages.sequence.lr_patience",
    "--lr-schedule": "stages.sequence.lr_schedule",
    "--lr-final": "stages.sequence.lr_final",
    "--time-budget": "stages.sequence.time_budget",
    "--hidden": "model.hidden",
    "--recurrent": "model.recurrent",
    "--activation": "model.activation",
    "--k": "model.k",
    "--max-len": "data.max_len",
    "--frames-per-beat": "data.frames_per_beat",
    "--tempo": "data.tempo_bpm",
    "--pretrain-epochs": "stages.frames.epochs",
    "--pretrain-lr": "stages.frames.lr",
    "--pretrain-k": "stages.frames.k",
    "--rnn-pretrain-epochs": "stages.rnn.epochs",
    "--valid-every": "validation.every",
    "--valid-frames": "validation.frames",
    "--valid-method": "validation.method",
    "--valid-runs": "validation.ais_runs",
    "--valid-betas": "validation.ais_betas",
    "--patience": "validation.patience",
    "--seed": "seed",
    "--threads": "threads",
    "--device": "device",
}
SWITCHES = {  # flag → (recipe key, value it sets)
    "--carry-state": ("data.carry_state", True),
    "--no-transpose": ("data.transpose_to_c", False),
    "--sustain": ("data.sustain", True),
}


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("train", parents=[common], help="train a model by a recipe")
    p.add_argument("--recipe", help="a bundled recipe name (see `rnnrbm recipes`) or a .toml file")
    p.add_argument("--model", help="rnn-rbm | rtrbm | lstm-rtrbm | rnn-nade | rbm (no --recipe)")
    p.add_argument("--data", help=f"{DATA_HELP} (default: the recipe's)")
    p.add_argument("--out", required=True, help="folder for checkpoints, recipe.toml, curves.png")
    resume = p.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    resume.add_argument(
        "--resume-if-exists",
        action="store_true",
        help="continue the run in --out if it has a checkpoint, else start it (for torchrun "
        "--max-restarts: a restarted group resumes from the last checkpoint)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any recipe field, e.g. --set stages.sequence.momentum=0.9 (repeatable)",
    )
    for flag, key in FLAGS.items():
        f = setting(key)
        kind = type(f.default)
        choices = f.metadata["choices"]
        p.add_argument(
            flag, type=kind, default=None, choices=choices, help=f"{key}: {f.metadata['doc']}"
        )
    for flag, (key, _) in SWITCHES.items():
        p.add_argument(flag, action="store_true", help=f"{key}: {setting(key).metadata['doc']}")
    p.set_defaults(func=run)


def _overrides(args: argparse.Namespace) -> list[tuple[str, str, Any]]:
    """``(flag, recipe key, value)`` of every flag given on the command line."""
    changes = []
    for flag, key in FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            changes.append((flag, key, value))
    for flag, (key, value) in SWITCHES.items():
        if getattr(args, flag[2:].replace("-", "_")):
            changes.append((flag, key, value))
    if args.data is not None:
        changes.append(("--data", "data.source", args.data))
    if args.model is not None and args.recipe is not None:
        changes.append(("--model", "model.type", args.model))
    return changes


def resumes(args: argparse.Namespace) -> bool:
    """Whether this command continues the run in ``--out`` (``--resume``, or
    ``--resume-if-exists`` and ``OUT/last.safetensors`` exists)."""
    last = Path(args.out) / "last.safetensors"
    return bool(args.resume or (getattr(args, "resume_if_exists", False) and last.is_file()))


def resolve_recipe(args: argparse.Namespace, resume: bool | None = None) -> Any:
    """The recipe this command line asks for (before training; raises on bad input);
    ``resume`` defaults to :func:`resumes`."""
    from rnnrbm.checkpoint import read_meta
    from rnnrbm.recipes import Recipe, default_recipe, load

    out = Path(args.out)
    if resumes(args) if resume is None else resume:
        last = out / "last.safetensors"
        if not last.is_file():
            raise user_error(
                "--resume",
                f"a checkpoint {last} from an earlier `rnnrbm train --out {out}`",
                "no such file",
                "drop --resume to start a new run, or pass the --out of the run to continue",
            )
        stored = read_meta(last).get("recipe")
        if stored is None:
            raise user_error(
                f"--resume {last}",
                "a checkpoint whose header holds its recipe",
                "a checkpoint written by an older rnnrbm",
                "start a new run (--out elsewhere); the old checkpoint still evaluates",
            )
        base = Recipe.from_dict(stored, where=str(last))
    elif (out / "last.safetensors").exists():
        raise user_error(
            f"--out {out}",
            "a folder without a checkpoint (a new run)",
            f"an existing run ({out / 'last.safetensors'})",
            "pass --resume to continue it, or choose another --out",
        )
    elif out.exists() and not out.is_dir():
        raise user_error(f"--out {out}", "a folder", "an existing file", "pass a folder path")
    elif args.recipe is not None:
        base = load(args.recipe)
    elif args.model is None or args.data is None:
        missing = "--model" if args.model is None else "--data"
        raise user_error(missing, "a value", "nothing", f"pass {missing}, or --recipe NAME")
    else:
        base = default_recipe(args.model, args.data)
    for flag, key, value in _overrides(args):
        base = base.override({key: value}, where=flag)
    return base.override(args.set)


def run(args: argparse.Namespace) -> int:
    from rnnrbm.recipes.runner import load_data
    from rnnrbm.validation import resolve_device

    start = time.perf_counter()
    resume = resumes(args)  # decided once, before training writes the checkpoint it looks for
    recipe = resolve_recipe(args, resume)
    out = Path(args.out)
    # Everything that can fail on the user's input happens before the first file is written.
    data = load_data(recipe)
    # Under torchrun: join the group now, so that rank 0 alone prints from here on.
    distributed.init_from_env(distributed.local_device(resolve_device(recipe.device)))
    try:
        return _train(args, recipe, data, out, resume, start)
    finally:
        distributed.shutdown()


def _train(
    args: argparse.Namespace, recipe: Any, data: Any, out: Path, resume: bool, start: float
) -> int:
    """Train (every rank), then report and draw the curves (rank 0)."""
    from rnnrbm.plotting import history_curves, save_curves
    from rnnrbm.recipes import run as run_recipe

    main = distributed.is_main()
    if main:
        print_skipped(args, data.skipped)
    if main and not args.json:
        print(f"recipe {recipe.name}: {recipe.description or recipe.model.type}")
    if main and data.streamed:
        train = data.dataset["train"]
        note(
            args,
            f"streaming {data.dataset.source} (data.stream={recipe.data.stream}): "
            f"{train.frames} train frames in {len(train.shards)} shards, read "
            f"{train.window} shards at a time",
        )
    # SIGINT always stops training cleanly, even when the shell started us with it ignored (a
    # background job): training.fit then defers it to the next step boundary and writes last.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = run_recipe(recipe, out, resume=resume, data=data, progress=not args.json)
    except KeyboardInterrupt:
        last = out / "last.safetensors"
        if main and last.is_file():
            note(
                args, f"interrupted; checkpoint {last}; continue: rnnrbm train --out {out} --resume"
            )
        elif main:
            note(args, "interrupted before the first checkpoint; nothing to resume")
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
    if not main:
        return 0
    res = {
        "command": "train",
        "model": recipe.model.type,
        "recipe_settings": recipe.with_expected_cleared().to_dict(),
    }
    res.update(result.as_dict())
    res["data"] = data.describe()
    curves = history_curves(result.history)
    if curves:
        path = save_curves(
            curves, out / "curves.png", ylabel="nats", title=f"{recipe.model.type} training"
        )
        res["paths"]["curves"] = str(path)
    res["seconds"] = round(time.perf_counter() - start, 2)
    final = result.history[-1] if result.history else {}
    shown = "  ".join(f"{k}={v:.4g}" for k, v in final.items() if k != "epoch")
    emit(
        args,
        res,
        [
            f"trained {recipe.model.type} for {result.epochs} epochs "
            f"({result.train.state.step} steps) on {data.dataset.name}: {shown}",
            *_stream_lines(result.stream),
            *(f"wrote {k}: {v}" for k, v in res["paths"].items()),
            f"next: rnnrbm evaluate {result.best or result.last}",
            f"done in {res['seconds']} s",
        ],
    )
    return 0


def _stream_lines(stream: dict[str, Any] | None) -> list[str]:
    """What a streamed run read (``RunResult.stream``), for the human-readable report."""
    if stream is None:
        return []
    e = stream["epochs"]
    lines = [
        f"streamed {e['frames']} train frames: {e['batches_per_epoch']} batches per epoch from "
        f"{e['shards']} shards in {e['windows']} windows of {e['window_shards']} shards"
    ]
    fp, va = stream["frame_pretraining"], stream["validation"]
    if fp is not None:
        lines.append(
            f"frame pretraining on a sample of {fp['frames']} of {fp['of_frames']} frames "
            f"({len(fp['shards'])} shards spread over the split)"
        )
    if va is not None:
        lines.append(
            f"validation on the first {va['pieces']} pieces ({va['frames']} of "
            f"{va['of_frames']} frames) of the valid split"
        )
    return lines
