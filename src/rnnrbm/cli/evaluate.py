"""``rnnrbm evaluate``: the benchmark protocol on a split (NLL per frame, frame accuracy).

The dataset, split and estimator settings default to the checkpoint's recipe (its
``[evaluation]`` section); flags override them. Under ``torchrun`` the ranks share the AIS, RAISE
and accuracy work of a temporal model block by block and print nothing but rank 0's report,
which equals the one-process report exactly (``evaluation.blocks``).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from rnnrbm.cli.common import (
    DATA_HELP,
    add_midi_flags,
    emit,
    load_music_checkpoint,
    midi_options,
    print_skipped,
    runs_gap_text,
    user_error,
)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("evaluate", parents=[common], help="benchmark protocol on a split")
    p.add_argument("checkpoint", help="a checkpoint written by `rnnrbm train`")
    p.add_argument("--data", default=None, help=f"{DATA_HELP} (default: the checkpoint's data)")
    p.add_argument("--split", default=None, help="the split (default: the recipe's, test)")
    p.add_argument("--method", choices=("auto", "exact", "ais"), default=None)
    p.add_argument("--ais-runs", type=int, default=None, help="AIS chains per frame (100)")
    p.add_argument("--ais-betas", type=int, default=None, help="AIS temperatures (1000)")
    p.add_argument(
        "--ais-base", choices=("gibbs", "mean-field", "bias", "data", "zero"), default=None
    )
    p.add_argument(
        "--no-conservative",
        action="store_true",
        help="skip the RAISE bound (conservative) that accompanies forward AIS on RBM frames",
    )
    p.add_argument("--accuracy-samples", type=int, default=None, help="0 skips frame accuracy")
    p.add_argument("--gibbs-steps", type=int, default=None, help="per accuracy sample (25)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    add_midi_flags(p, "MIDI data")
    p.set_defaults(func=run)


def _settings(args: argparse.Namespace, recipe: Any) -> Any:
    """The recipe's evaluation section with the flags applied (and checked)."""
    from rnnrbm.recipes.schema import EvaluationSpec

    base = recipe.evaluation if recipe is not None else EvaluationSpec()
    changes = {
        "split": args.split,
        "method": args.method,
        "ais_runs": args.ais_runs,
        "ais_betas": args.ais_betas,
        "ais_base": args.ais_base,
        "accuracy_samples": args.accuracy_samples,
        "gibbs_steps": args.gibbs_steps,
        "conservative": False if args.no_conservative else None,
    }
    return EvaluationSpec(**{**vars(base), **{k: v for k, v in changes.items() if v is not None}})


def run(args: argparse.Namespace) -> int:
    from rnnrbm import distributed

    distributed.init_from_env(_device_type(args.device))
    try:
        return _run(args)
    finally:
        distributed.shutdown()


def _device_type(device: str) -> str:
    import torch

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return "cuda" if cuda else "cpu"


def _run(args: argparse.Namespace) -> int:
    from rnnrbm import distributed
    from rnnrbm.data.music_data import load_music_data
    from rnnrbm.evaluation import evaluate, evaluate_rbm
    from rnnrbm.models import RBM

    start = time.perf_counter()
    ck = load_music_checkpoint(args, args.checkpoint, args.device)
    spec = _settings(args, ck.recipe)
    source = args.data or ck.framing.get("source")
    if not source:
        raise user_error(
            "--data", "the dataset to evaluate on", "nothing (the checkpoint names none)", "pass it"
        )
    data = load_music_data(source, options=midi_options(args, ck.framing))
    print_skipped(args, data.skipped)
    ds = data.dataset
    if spec.split not in ds.splits or not ds[spec.split]:
        raise user_error(
            "--split",
            f"a non-empty split of {source} ({', '.join(s for s in ds.splits if ds[s])})",
            repr(spec.split),
            "pick one of those (a MIDI folder has train, valid and all)",
        )
    if isinstance(ck.model, RBM):
        res = evaluate_rbm(
            ck.model, ds, spec.split, method=spec.method, ais_runs=spec.ais_runs,
            ais_betas=spec.ais_betas, seed=args.seed,
        )  # fmt: skip
    else:
        res = evaluate(
            ck.model, ds, spec.split, method=spec.method, ais_runs=spec.ais_runs,
            ais_betas=spec.ais_betas, ais_base=spec.ais_base,
            accuracy=spec.accuracy_samples > 0, samples=max(spec.accuracy_samples, 1),
            gibbs_steps=spec.gibbs_steps, seed=args.seed, conservative=spec.conservative,
        )  # fmt: skip
    res = {"command": "evaluate", "checkpoint": args.checkpoint, "data": source, **res}
    res["ranks"] = distributed.world_size()
    res["seconds"] = round(time.perf_counter() - start, 2)
    nll = res["nll"]
    pm = f" ± {nll['se']:.3f}" if nll["se"] > 0 else ""
    lines = [
        f"{ds.name} {spec.split}: NLL {nll['nll']:.3f}{pm} nats per frame (summed over the 88 "
        f"keys, flat mean) over {nll['n_frames']} frames ({nll['estimator']}){runs_gap_text(nll)}"
    ]
    upper = res.get("nll_conservative")
    if upper:
        interval = res["interval"]
        lines.append(
            f"conservative NLL {upper['nll']:.3f} ± {upper['se']:.3f} ({upper['estimator']})"
            f"{runs_gap_text(upper)}; the NLL lies in [{interval['optimistic']:.3f}, "
            f"{interval['conservative']:.3f}] (gap {interval['gap']:+.3f}, "
            f"{'tight' if interval['tight'] else 'NOT tight: use more β steps'})"
        )
    acc = res.get("accuracy")
    if acc:
        lines.append(
            f"frame accuracy {100 * acc['accuracy']:.2f}% ± {100 * acc['se']:.2f} "
            f"({acc['samples']} samples per frame, {acc['gibbs_steps']} Gibbs steps)"
        )
    if distributed.is_main():
        emit(args, res, lines)
    return 0
