"""Time to quality: training seconds of a bundled recipe until the JSB test NLL reaches a target.

    python benchmarks/bench_quality.py --model rnn-nade          # jsb-rnn-nade, target 5.56
    python benchmarks/bench_quality.py --model rnn-rbm --json    # jsb-rnn-rbm-minute, target 6.27

The recipe trains as ``rnnrbm train --recipe NAME`` does (frame and RNN pretraining included,
validation included), on ``--threads`` threads, within its own time budget or ``--budget``.
At every epoch end a callback copies the weights and notes the training seconds so far, counted
from the start of the run; the copy itself is taken off the clock. The clock therefore holds
all the work a user waits for, and the figures move with the machine's speed: the epochs and
seconds per epoch are printed beside them.

Afterwards (not timed) the snapshots are scored on the JSB test set (4,725 frames, nats per
frame summed over 88 keys, flat over frames):

* RNN-NADE: the exact NLL of every snapshot.
* RBM frames (AIS over the whole test set costs minutes): the last snapshot within the goal
  (60 s) by forward AIS *and* RAISE at ``--ais-runs`` × ``--ais-betas``.

Time to quality = the training seconds at the first snapshot whose exact or conservative NLL
is ≤ the target (``null`` when none within the budget). Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench_limits import peak_rss_mib
from rnnrbm.checkpoint import load_checkpoint
from rnnrbm.data.polyphonic import load_polyphonic
from rnnrbm.evaluation import evaluate
from rnnrbm.recipes import load, run
from rnnrbm.training import Callback, TrainConfig, TrainState

TARGETS = {"rnn-nade": ("jsb-rnn-nade", 5.56), "rnn-rbm": ("jsb-rnn-rbm-minute", 6.27)}


class Snapshots(Callback):
    """Copies each epoch's ``last.safetensors`` (written just before this hook) aside with the
    training seconds so far; the copy is taken off the clock."""

    def __init__(self, folder: Path, start: float) -> None:
        self.folder, self.start, self.off_clock = folder, start, 0.0
        self.taken: list[dict[str, Any]] = []

    def on_fit_start(self, state: TrainState, n_batches: int, config: TrainConfig) -> None:
        self.taken.clear()  # each stage calls fit: keep the last stage's (the sequence model's)

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        t0 = time.perf_counter()
        seconds = t0 - self.start - self.off_clock
        path = self.folder / f"epoch-{state.epoch:04d}.safetensors"
        shutil.copyfile(self.folder / "last.safetensors", path)
        self.taken.append({"epoch": state.epoch, "train_seconds": seconds, "path": path})
        self.off_clock += time.perf_counter() - t0


def _score(snap: dict, data: Any, runs: int, betas: int, both: bool) -> dict:
    model = load_checkpoint(snap["path"]).model
    report = evaluate(
        model, data, "test", ais_runs=runs, ais_betas=betas, accuracy=False, conservative=both
    )
    nll = report["nll"]
    row = {"epoch": snap["epoch"], "train_seconds": round(snap["train_seconds"], 1)}
    row |= {"nll": round(nll["nll"], 4), "se": round(nll["se"], 4), "estimator": nll["estimator"]}
    if report.get("nll_conservative"):
        row["nll_conservative"] = round(report["nll_conservative"]["nll"], 4)
    if nll["estimator"] != "exact":
        row["ais"] = f"{runs} runs × {betas} β"
    return row


def _reached(row: dict, target: float) -> bool:
    return row.get("nll_conservative", row["nll"]) <= target


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", choices=sorted(TARGETS), default="rnn-nade")
    ap.add_argument("--budget", type=float, default=None, help="seconds (default: the recipe's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ais-runs", type=int, default=20)
    ap.add_argument("--ais-betas", type=int, default=1000)
    ap.add_argument("--json", action="store_true", help="print one JSON object only")
    args = ap.parse_args(argv)
    name, target = TARGETS[args.model]
    goal_seconds = {"rnn-nade": 20.0, "rnn-rbm": 60.0}[args.model]
    changes: dict[str, Any] = {"threads": args.threads}
    if args.budget:
        changes["stages.sequence.time_budget"] = args.budget
    recipe = load(name).override(changes).with_expected_cleared()
    budget = recipe.stages.sequence.time_budget or None

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        snaps = Snapshots(folder, start)
        run(recipe, folder, callbacks=[snaps])
        wall = time.perf_counter() - start
        out = _scored(snaps.taken, args, target, goal_seconds)
    epochs = len(snaps.taken)
    out = {
        "benchmark": "time_to_quality",
        "model": args.model,
        "recipe": name,
        "threads": args.threads,
        "target_nll": target,
        "goal_train_seconds": goal_seconds,
        "budget_seconds": budget,
        "epochs_trained": epochs,
        "run_wall_seconds": round(wall, 1),
        "median_epoch_seconds": _median_epoch(snaps.taken),
        **out,
        "units": "nats per frame (summed over 88 keys), flat over the 4,725 JSB test frames",
        "peak_rss_mib": peak_rss_mib(),
        "torch": torch.__version__,
    }
    print(json.dumps(out) if args.json else json.dumps(out, indent=1))
    return out


def _median_epoch(taken: list[dict]) -> float | None:
    times = [b["train_seconds"] - a["train_seconds"] for a, b in itertools.pairwise(taken)]
    return round(statistics.median(times), 3) if times else None


def _scored(taken: list[dict], args: argparse.Namespace, target: float, goal: float) -> dict:
    """Score the snapshots (not timed); the first whose exact or conservative NLL ≤ target."""
    data = load_polyphonic("jsb")
    rows: list[dict] = []
    exact = args.model == "rnn-nade"
    first = None
    if exact:
        for snap in taken:
            rows.append(_score(snap, data, 1, 1, False))
            if _reached(rows[-1], target):
                first = rows[-1]
                break
    else:  # AIS on the whole test set costs minutes: score the last snapshot within the goal
        within = [s for s in taken if s["train_seconds"] <= goal] or taken[:1]
        rows.append(_score(within[-1], data, args.ais_runs, args.ais_betas, True))
        first = rows[-1] if _reached(rows[-1], target) else None
    return {
        "time_to_target_seconds": first["train_seconds"] if first else None,
        "reached_at_epoch": first["epoch"] if first else None,
        "scored": rows,
    }


if __name__ == "__main__":
    main()
