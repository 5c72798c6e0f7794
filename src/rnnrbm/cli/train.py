"""``rnnrbm train``: run a recipe — bundled, from a file, or the default for a model and data.

Every flag is a recipe field (``FLAGS``); ``--set KEY=VALUE`` reaches any other. The resolved
recipe is saved as ``OUT/recipe.toml`` and in every checkpoint; ``--resume`` continues the run
in ``OUT`` with the recipe stored in its checkpoint (only ``--epochs``/``--time-budget`` may
change). Ctrl-C stops at the next step boundary with a resumable ``last.safetensors`` (exit 130).
"""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path
from typing import Any

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
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
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


def resolve_recipe(args: argparse.Namespace) -> Any:
    """The recipe this command line asks for (before training; raises on bad input)."""
    from rnnrbm.checkpoint import read_meta
    from rnnrbm.recipes import Recipe, default_recipe, load

    out = Path(args.out)
    if args.resume:
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
    from rnnrbm.plotting import history_curves, save_curves
    from rnnrbm.recipes import run as run_recipe
    from rnnrbm.recipes.runner import load_data

    start = time.perf_counter()
    recipe = resolve_recipe(args)
    out = Path(args.out)
    # Everything that can fail on the user's input happens before the first file is written.
    data = load_data(recipe)
    print_skipped(args, data.skipped)
    if not args.json:
        print(f"recipe {recipe.name}: {recipe.description or recipe.model.type}")
    # SIGINT always stops training cleanly, even when the shell started us with it ignored (a
    # background job): training.fit then defers it to the next step boundary and writes last.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = run_recipe(recipe, out, resume=args.resume, data=data, progress=not args.json)
    except KeyboardInterrupt:
        last = out / "last.safetensors"
        if last.is_file():
            note(
                args, f"interrupted; checkpoint {last}; continue: rnnrbm train --out {out} --resume"
            )
        else:
            note(args, "interrupted before the first checkpoint; nothing to resume")
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
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
            *(f"wrote {k}: {v}" for k, v in res["paths"].items()),
            f"next: rnnrbm evaluate {result.best or result.last}",
            f"done in {res['seconds']} s",
        ],
    )
    return 0
