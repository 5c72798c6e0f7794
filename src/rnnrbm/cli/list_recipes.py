"""``rnnrbm recipes``: the bundled recipes, one line each with what they reached and how fast;
``--show NAME`` prints one as TOML."""

from __future__ import annotations

import argparse
from typing import Any

from rnnrbm.cli.common import emit


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("recipes", parents=[common], help="list the bundled training recipes")
    p.add_argument(
        "--show", metavar="NAME", help="print one recipe (bundled name or .toml) as TOML"
    )
    p.set_defaults(func=run)


def _line(recipe: Any) -> str:
    e = recipe.expected
    figure = f"test NLL {e.test_nll:.3f} ({e.estimator})" if e.test_nll else "no measured figure"
    if e.train_seconds:
        minutes = e.train_seconds / 60
        figure += f", {minutes:.0f} min of training on {e.threads or '?'} thread(s)"
        figure += f" ({e.epochs} epochs, {e.measured})"
    lines = [f"{recipe.name:<22} {recipe.description}", f"{'':<22} {figure}"]
    if e.note:  # e.g. the mean over seeds, the paper's figure
        lines.append(f"{'':<22} {e.note}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from rnnrbm.recipes import bundled_names, load

    if args.show:
        recipe = load(args.show)
        emit(args, {"command": "recipes", "recipe": recipe.to_dict()}, [recipe.to_toml()])
        return 0
    recipes = [load(n) for n in bundled_names()]
    res = {
        "command": "recipes",
        "recipes": [
            {"name": r.name, "description": r.description, "model": r.model.type,
             "data": r.data.source, "expected": r.to_dict()["expected"]}
            for r in recipes
        ],
        "units": "test NLL in nats per frame (summed over the 88 keys, flat mean over frames)",
    }  # fmt: skip
    lines = [_line(r) for r in recipes]
    lines.append(
        "train one: rnnrbm train --recipe NAME --out runs/NAME; "
        "defaults of `rnnrbm train --model M --data D` come from these"
    )
    emit(args, res, lines)
    return 0
