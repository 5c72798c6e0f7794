"""The music demo: the ``demo`` recipe (an RNN-RBM on JSB Chorales within a time budget), its
test NLL, and a generated chorale written as MIDI, WAV and piano-roll PNG at the recipe's
framing (1 frame per beat at 90 bpm), with the loss curves and a self-describing checkpoint."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from rnnrbm.checkpoint import save_checkpoint
from rnnrbm.evaluation import evaluate
from rnnrbm.generation import generate_music
from rnnrbm.music.statistics import roll_statistics
from rnnrbm.plotting import history_curves, save_curves
from rnnrbm.recipes import Recipe, load, run
from rnnrbm.recipes.runner import load_data

__all__ = ["busy_machine_threads", "run_music_demo"]

PAPER_JSB_RNN_RBM = 6.27  # BL2012 Table 1


def busy_machine_threads(threads: int = 0) -> tuple[int, float]:
    """Training threads: ``threads``, else PyTorch's, else 1 on a busy machine; and the load.

    The RNN-RBM's products are small (≈ 16 × 60 frames × 88 × 150), so OpenMP threads that spin
    while another process holds a core lose badly: measured on 2 cores beside one busy process,
    a 30-s budget gave 1–22 epochs with 2 threads and 14 every time with 1 (idle: ~24 with 2).
    """
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if threads:
        return threads, load_avg
    n = torch.get_num_threads()
    return (1 if n > 1 and load_avg >= 0.5 else n), load_avg


def run_music_demo(
    out: str | Path = "demo",
    recipe: Recipe | None = None,
    *,
    threads: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Train, evaluate, generate; returns a JSON-able summary with every path written."""
    start = time.perf_counter()
    out = Path(out)
    recipe = recipe or load("demo")
    train_threads, load_avg = busy_machine_threads(threads or recipe.threads)
    recipe = recipe.override({"threads": train_threads})
    torch.manual_seed(recipe.seed)
    data = load_data(recipe)
    result = run(recipe, data=data, progress=progress)
    model, framing, ds = result.model, result.framing, data.dataset
    t_train = time.perf_counter() - start
    ev = recipe.evaluation
    t0 = time.perf_counter()
    report = evaluate(
        model, ds, ev.split, method="ais", ais_runs=ev.ais_runs, ais_betas=ev.ais_betas,
        ais_base=ev.ais_base, accuracy=False, seed=recipe.seed, conservative=ev.conservative,
    )  # fmt: skip
    t_eval = time.perf_counter() - t0
    piece = generate_music(
        model, out, steps=recipe.generation.steps, gibbs_steps=recipe.generation.gibbs_steps,
        seed=recipe.seed, frames_per_beat=framing["frames_per_beat"],
        tempo_bpm=framing["tempo_bpm"], stem="chorale", synth="additive",
    )  # fmt: skip
    paths = {k: str(v) for k, v in piece.paths[0].items()}
    title = f"{recipe.model.type} on {ds.name}"
    paths["curves"] = str(
        save_curves(history_curves(result.history), out / "loss.png", ylabel="nats", title=title)
    )
    paths["checkpoint"] = str(
        save_checkpoint(
            out / "rnn_rbm.safetensors",
            model,
            meta={"recipe": recipe.to_dict(), "framing": framing},
        )
    )
    return {
        "command": "demo",
        "recipe": recipe.name,
        "dataset": f"{ds.name}: " + ", ".join(f"{len(ds[s])} {s}" for s in ds.splits),
        "framing": framing,
        "model": model.config(),  # type: ignore[operator]
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "valid_estimator": result.valid_estimator,
        "test_nll": report["nll"],
        "test_nll_conservative": report["nll_conservative"],
        "test_nll_interval": report["interval"],
        "paper_test_nll": PAPER_JSB_RNN_RBM,
        "notes_per_frame": {
            "generated": round(float(piece.rolls[0].sum(-1).mean()), 2),
            "train": round(float(ds.frames("train").sum(-1).mean()), 2),
        },
        "statistics": {
            "generated": roll_statistics(piece.rolls[0] >= 0.5),
            "reference": {
                "source": ds.name,
                "split": ev.split,
                **roll_statistics(ds[ev.split]),
            },
        },
        "history": result.as_dict()["history"],
        "paths": paths,
        "timings_s": {"train": round(t_train, 1), "evaluate": round(t_eval, 1)},
        "threads": {"train": train_threads, "load_avg": round(load_avg, 2)},
        "seconds": round(time.perf_counter() - start, 2),
    }
