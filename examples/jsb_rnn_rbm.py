"""An RNN-RBM on JSB Chorales from Python: a recipe, its test NLL, and a chorale as MIDI.

The bundled ``jsb-rnn-rbm`` recipe holds the settings of the published row (400 epochs, about
18 minutes on one CPU thread). ``--epochs`` shortens it for a first look; ``--tiny`` makes the
model small enough to finish in seconds (the test suite runs it so). Run:
``python examples/jsb_rnn_rbm.py --epochs 20 --out runs/example``.
"""

from __future__ import annotations

import argparse

import torch

from rnnrbm import recipes
from rnnrbm.evaluation import evaluate
from rnnrbm.generation import generate_music
from rnnrbm.recipes.runner import load_data


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="runs/example")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--tiny", action="store_true", help="a 88 × 8 model and cheap AIS (seconds)")
    args = ap.parse_args(argv)

    recipe = recipes.load("jsb-rnn-rbm").override({"stages.sequence.epochs": args.epochs})
    if args.tiny:
        recipe = recipe.override(
            {"model.hidden": 8, "model.recurrent": 8, "model.k": 1, "stages.frames.epochs": 1,
             "validation.every": 1, "validation.frames": 100, "validation.ais_runs": 2,
             "validation.ais_betas": 20, "evaluation.ais_runs": 2, "evaluation.ais_betas": 20}
        )  # fmt: skip
    result = recipes.run(recipe, out=args.out)  # writes recipe.toml, last/best.safetensors

    ev = recipe.evaluation
    test = evaluate(
        result.model, load_data(recipe).dataset, "test", ais_runs=ev.ais_runs,
        ais_betas=ev.ais_betas, accuracy=False, seed=recipe.seed,
    )  # fmt: skip
    nll = test["nll"]
    print(f"test NLL {nll['nll']:.3f} ± {nll['se']:.3f} nats per frame ({nll['estimator']})")

    framing = result.framing  # JSB: one frame per quarter note
    piece = generate_music(
        result.model, args.out, steps=64, frames_per_beat=framing["frames_per_beat"],
        tempo_bpm=framing["tempo_bpm"], stem="chorale", seed=recipe.seed,
    )  # fmt: skip
    print("wrote", ", ".join(str(p) for p in piece.paths[0].values()))
    return {"nll": nll, "paths": piece.paths[0], "epochs": result.epochs}


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
