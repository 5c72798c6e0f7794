"""``rnnrbm demo``: the ``demo`` recipe on JSB Chorales, its test NLL, and a generated chorale."""

from __future__ import annotations

import argparse
from typing import Any

from rnnrbm.cli.common import emit, note, runs_gap_text, statistics_lines


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", parents=[common], help="RNN-RBM on bundled JSB Chorales (CPU)")
    p.add_argument("--out", default="demo", help="output folder (default: demo)")
    p.add_argument("--recipe", default="demo", help="the recipe (default: the bundled demo)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="change a recipe field"
    )
    p.add_argument("--threads", type=int, default=0, help="training threads (0: auto)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rnnrbm.demos.music import busy_machine_threads, run_music_demo
    from rnnrbm.recipes import load

    recipe = load(args.recipe).override(args.set)
    threads, load_avg = busy_machine_threads(args.threads or recipe.threads)
    if threads == 1 and load_avg >= 0.5 and not args.threads:
        note(args, f"the machine is busy (load {load_avg:.1f}): training on 1 thread")
    res = run_music_demo(args.out, recipe, threads=threads, progress=not args.json)
    nll, fr = res["test_nll"], res["framing"]
    notes = res["notes_per_frame"]
    emit(
        args,
        res,
        [
            f"trained an RNN-RBM by the {res['recipe']!r} recipe on {res['dataset']}: "
            f"{res['epochs']} sequence epochs in {res['timings_s']['train']:.0f} s "
            f"(best validation epoch {res['best_epoch']})",
            f"test NLL {nll['nll']:.3f} ± {nll['se']:.3f} nats per frame over {nll['n_frames']} "
            f"frames ({nll['estimator']}; forward AIS, which errs low with few runs or β"
            f"{runs_gap_text(nll)}); the paper's RNN-RBM reaches {res['paper_test_nll']}",
            *_interval_line(res),
            f"generated a chorale at {fr['frames_per_beat']} frame(s) per beat, "
            f"{fr['tempo_bpm']:g} bpm: {notes['generated']:.2f} notes per frame "
            f"(training data: {notes['train']:.2f})",
            *statistics_lines(res["statistics"]),
            *(f"wrote {k}: {v}" for k, v in res["paths"].items()),
            f"done in {res['seconds']:.0f} s",
        ],
    )
    return 0


def _interval_line(res: dict[str, Any]) -> list[str]:
    interval = res["test_nll_interval"]
    if not interval:
        return []
    upper = res["test_nll_conservative"]
    return [
        f"conservative NLL {upper['nll']:.3f} ± {upper['se']:.3f} ({upper['estimator']}): "
        f"the test NLL lies in [{interval['optimistic']:.3f}, {interval['conservative']:.3f}]"
    ]
