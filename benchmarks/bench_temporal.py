"""Speed of the temporal family on the real JSB Chorales splits (issue 4's speed targets).

    python benchmarks/bench_temporal.py                 # all four models, CPU, 2 threads
    python benchmarks/bench_temporal.py --models rnn-rbm --json
    python benchmarks/bench_temporal.py --ais-sequences 77   # AIS on the whole test set
    python benchmarks/bench_temporal.py --models rnn-rbm --gradient autograd direct  # both

Reports, per model (150 hidden, 100 recurrent, CD-15 for RBM frames):

* training throughput through ``training.fit`` (Adam, gradient clipping, the one loop) on the
  JSB train split — 229 sequences, 13,807 frames per epoch, ``--batch-size`` sequences per batch
  (bucketed by length) — as frames/s and seconds per epoch, after one warm-up epoch, and as a
  fraction of the GEMM-bound time of that epoch (``bench_limits.py``: the machine's fp32 GEMM
  rate at these shapes, measured in the same run). A peer is compared only when it ran in the
  same run on the same machine at the same work.
* generation: 200 frames, 25 Gibbs steps each (NADE: exact ancestral draws), one sequence.
* AIS evaluation of the JSB test set (4,725 frames) at ``--ais-runs`` × ``--ais-betas``
  (the protocol: 100 × 1,000): ``rnnrbm.evaluation.sequence_nll`` is timed on the first
  ``--ais-sequences`` test sequences and, when that is not all 77, extrapolated linearly to 4,725
  frames (the cost is frames × runs × β chain steps; the recurrence pass is negligible).

Timings on a shared machine move with its load: the 1-minute load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from bench_limits import gemm_gflops, peak_rss_mib, rnn_rbm_train_flops
from rnnrbm.data.batching import SequenceBatches
from rnnrbm.data.polyphonic import load_polyphonic
from rnnrbm.evaluation import sequence_nll
from rnnrbm.models.sequence import SequenceEpochs, build_sequence_model
from rnnrbm.training import Callback, TrainConfig, TrainState, fit

MODELS = ["rnn-rbm", "rtrbm", "lstm-rtrbm", "rnn-nade"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(name: str, args: argparse.Namespace, gradient: str = "autograd"):  # type: ignore[no-untyped-def]
    kw: dict = {"n_hidden": args.hidden, "device": args.device, "seed": args.seed}
    if name != "rtrbm":
        kw["n_recurrent"] = args.recurrent
    if name != "rnn-nade":
        kw["k"] = args.k
    kw["gradient"] = gradient
    if args.activation and name in ("rnn-rbm", "rnn-nade"):
        kw["activation"] = args.activation
    return build_sequence_model(name, **kw)


class _EpochTimer(Callback):
    """Wall-clock time of every epoch of one ``fit`` call (synchronising CUDA first)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.times, self._t = device, [], 0.0

    def on_fit_start(self, state: TrainState, n_batches: int, config: TrainConfig) -> None:
        _sync(self.device)
        self._t = time.perf_counter()

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        _sync(self.device)
        now = time.perf_counter()
        self.times.append(now - self._t)
        self._t = now


def bench_training(
    name: str, train: list, args: argparse.Namespace, gradient: str = "autograd"
) -> dict:
    model = build(name, args, gradient)
    device = next(model.parameters()).device
    batches = SequenceBatches(
        train,
        args.batch_size,
        seed=args.seed,
        sort_by_length=True,
        max_len=args.max_len,
        device=device,
    )
    n_frames = sum(len(r) for r in train)
    timer = _EpochTimer(device)
    config = TrainConfig(
        epochs=1 + args.epochs, lr=1e-3, optimizer="adam", clip_grad_norm=10.0, seed=args.seed
    )
    fit(model, SequenceEpochs(batches), None, config, [timer])
    epoch_s = statistics.median(timer.times[1:])  # epoch 1 warms up (allocator, caches)
    out = {
        "batch_size": args.batch_size,
        "max_len": args.max_len,
        "updates_per_epoch": len(batches),
        "ms_per_update": round(1e3 * epoch_s / len(batches), 3),
        "frames_per_epoch": n_frames,
        "epoch_s": round(epoch_s, 3),
        "frames_per_s": round(n_frames / epoch_s),
        "epochs_timed": args.epochs,
    }
    if name == "rnn-rbm":  # the FLOP model of bench_limits covers this model
        rows = round(n_frames / len(batches))  # rows of a batch's products
        rate = gemm_gflops(rows, 88, args.hidden, device=args.device)
        flops = n_frames * rnn_rbm_train_flops(88, args.hidden, args.recurrent, args.k)
        out["gemm_gflops_at_batch_rows"] = round(rate, 1)
        out["gemm_bound_epoch_s"] = round(flops / (rate * 1e9), 3)
        out["fraction_of_limit"] = round(flops / (rate * 1e9) / epoch_s, 2)
    return out


def bench_generation(name: str, args: argparse.Namespace) -> dict:
    model = build(name, args)
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(args.seed)
    times = []
    for _ in range(1 + args.repeats):
        _sync(device)
        t0 = time.perf_counter()
        model.generate(args.gen_frames, gibbs_steps=args.gibbs_steps, generator=g)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {
        "frames": args.gen_frames,
        "gibbs_steps": args.gibbs_steps,
        "seconds": round(statistics.median(times[1:]), 4),
    }


def bench_ais(name: str, test: list, args: argparse.Namespace) -> dict:
    model = build(name, args)
    device = next(model.parameters()).device
    rolls = test[: args.ais_sequences]
    frames = sum(len(r) for r in rolls)
    total = sum(len(r) for r in test)
    _sync(device)
    t0 = time.perf_counter()
    report = sequence_nll(
        model, rolls, method="ais", ais_runs=args.ais_runs, ais_betas=args.ais_betas, seed=args.seed
    )
    _sync(device)
    seconds = time.perf_counter() - t0
    return {
        "runs": args.ais_runs,
        "betas": args.ais_betas,
        "frames_timed": frames,
        "seconds_timed": round(seconds, 2),
        "test_frames": total,
        "seconds_test_set": round(seconds * total / frames, 1),
        "extrapolated": frames != total,
        "estimator": report.estimator,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    ap.add_argument("--hidden", type=int, default=150)
    ap.add_argument("--recurrent", type=int, default=100)
    ap.add_argument("--k", type=int, default=15, help="CD-k")
    ap.add_argument(
        "--activation", choices=["sigmoid", "tanh"], help="rnn-rbm/rnn-nade (default: sigmoid)"
    )
    ap.add_argument("--batch-size", type=int, default=100, help="sequences per batch")
    ap.add_argument(
        "--max-len",
        type=int,
        default=None,
        help="cut sequences into chunks of at most this many frames (the Theano tutorial's "
        "schedule: --batch-size 1 --max-len 100)",
    )
    ap.add_argument(
        "--gradient",
        nargs="+",
        default=["autograd"],
        choices=["autograd", "direct"],
        help="autograd's gradient or the written-out one (model.gradient); both: timed in turn, "
        "with the ratio",
    )
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs (after 1 warm-up)")
    ap.add_argument("--gen-frames", type=int, default=200)
    ap.add_argument("--gibbs-steps", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=5, help="timed generations (after 1)")
    ap.add_argument("--ais-runs", type=int, default=100)
    ap.add_argument("--ais-betas", type=int, default=1000)
    ap.add_argument("--ais-sequences", type=int, default=3, help="test sequences timed (77: all)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["train", "generate", "ais"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--dataset", default="jsb", help="jsb | nottingham | musedata | piano-midi (train split)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object only")
    args = ap.parse_args(argv)
    if len(args.gradient) > 2:
        ap.error("--gradient: one or two of autograd, direct")

    torch.set_num_threads(args.threads)
    ds = load_polyphonic(args.dataset)
    results: dict = {}
    for name in args.models:
        row: dict = {}
        row["gradient"] = args.gradient[0]
        if name in ("rnn-rbm", "rnn-nade"):
            row["activation"] = build(name, args).config()["activation"]
        if "train" not in args.skip:
            row["train"] = bench_training(name, ds["train"], args, args.gradient[0])
            if len(args.gradient) > 1:
                other = bench_training(name, ds["train"], args, args.gradient[1])
                row[f"train_gradient_{args.gradient[1]}"] = other
                row[f"ms_per_update_ratio_{args.gradient[0]}_to_{args.gradient[1]}"] = round(
                    row["train"]["ms_per_update"] / other["ms_per_update"], 3
                )
        if "generate" not in args.skip:
            row["generate"] = bench_generation(name, args)
        if "ais" not in args.skip and name != "rnn-nade":
            row["ais_test_set"] = bench_ais(name, ds["test"], args)
        results[name] = row
        if not args.json:
            print(name, json.dumps(row), flush=True)
    out = {
        "models": results,
        "hidden": args.hidden,
        "recurrent": args.recurrent,
        "k": args.k,
        "threads": args.threads,
        "device": args.device,
        "dataset": args.dataset,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        # the whole process's high-water mark: run one model per process to get each one's
        "peak_rss_mib": peak_rss_mib(),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
