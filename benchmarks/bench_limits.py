"""The machine's limit at the shapes that matter: fp32 GEMM rates, and the GEMM-bound time of the
RNN-RBM's training epoch and of AIS that the other benchmarks divide by.

    python benchmarks/bench_limits.py            # 1 and 2 threads
    python benchmarks/bench_limits.py --json

Shapes: ``rows × 88 × 150`` (a frame RBM's v → h product) for rows = 60 (one JSB chorale),
480 (a batch of 8) and 6,000 (a batch of 100), with its transpose ``rows × 150 × 88``; and the
RBM benchmark's ``rows × 784 × 500`` at 100 and 1,000 rows. Each rate is the median of
``--repeats`` timed products after a warm-up, in GFLOP/s (2·m·k·n per product).

FLOP model of one RNN-RBM training frame (:func:`rnn_rbm_train_flops`, multiply-adds × 2):
CD-k runs 2k products of ``n_v × n_h`` per frame; the stacked free energy of the positive and
negative frame is 2 products forward and 4 backward (inputs and weights); the recurrence
``u_t = σ(W_vu v_t + W_uu u_{t−1})`` and the bias offsets ``W_uv u, W_uh u`` are
``n_u (n_v + n_u + n_v + n_h)`` multiply-adds forward and twice that backward. AIS: 2 products
of ``n_v × n_h`` per chain per β step. Element-wise work (sigmoids, sampling, softplus) is not
counted: the bound is what the products alone would take at the measured rate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time

import torch

JSB_SHAPES = [(60, 88, 150), (60, 150, 88), (480, 88, 150), (480, 150, 88), (6000, 88, 150)]
RBM_SHAPES = [(100, 784, 500), (1000, 784, 500)]


def peak_rss_mib() -> int:
    """This process's peak resident memory so far (MiB): one benchmark per process gives its
    own figure."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def gemm_gflops(m: int, k: int, n: int, *, repeats: int = 50, device: str = "cpu") -> float:
    """Median GFLOP/s of ``(m × k) @ (k × n)`` in float32 on ``device``."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=g).to(device)
    b = torch.randn(k, n, generator=g).to(device)
    out = torch.empty(m, n, device=device)
    inner = max(1, int(2e8 // (2 * m * k * n)))  # ≥ ~0.2 GFLOP per timing: above timer noise
    times = []
    for i in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b, out=out)
        if device == "cuda":
            torch.cuda.synchronize()
        if i:  # the first is a warm-up
            times.append((time.perf_counter() - t) / inner)
    return 2 * m * k * n / statistics.median(times) / 1e9


def rnn_rbm_train_flops(n_v: int = 88, n_h: int = 150, n_u: int = 100, k: int = 15) -> float:
    """FLOPs of one RNN-RBM training frame (module doc): products only."""
    rbm = 2 * n_v * n_h
    gibbs = 2 * k * rbm
    free_energy = 2 * rbm * 3  # positive + negative row, forward + 2× backward
    recurrence = 2 * n_u * (n_v + n_u + n_v + n_h) * 3
    return float(gibbs + free_energy + recurrence)


def ais_flops(frames: int, runs: int, betas: int, n_v: int = 88, n_h: int = 150) -> float:
    """FLOPs of forward AIS (or RAISE) over ``frames`` frames: 2 products per chain per β."""
    return float(frames) * runs * betas * 2 * (2 * n_v * n_h)


def limits(threads: int, repeats: int, device: str = "cpu") -> dict[str, float]:
    """GFLOP/s per shape name ``"m×k×n"`` at ``threads`` threads."""
    torch.set_num_threads(threads)
    return {
        f"{m}x{k}x{n}": round(gemm_gflops(m, k, n, repeats=repeats, device=device), 1)
        for m, k, n in JSB_SHAPES + RBM_SHAPES
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true", help="print one JSON object only")
    args = ap.parse_args()
    rates = {str(t): limits(t, args.repeats, args.device) for t in args.threads}
    jsb_epoch = 13_807 * rnn_rbm_train_flops()
    ais_jsb = ais_flops(4_725, 100, 1_000)
    bounds = {}
    for t, r in rates.items():
        bounds[t] = {
            # batch 8 of ~60-frame chorales: the products have ~480 rows
            "rnn_rbm_jsb_epoch_batch8_s": round(jsb_epoch / (r["480x88x150"] * 1e9), 3),
            "rnn_rbm_jsb_epoch_batch100_s": round(jsb_epoch / (r["6000x88x150"] * 1e9), 3),
            "ais_jsb_test_100x1000_s": round(ais_jsb / (r["480x88x150"] * 1e9), 1),
        }
    out = {
        "gflops": rates,
        "gemm_bound": bounds,
        "flops": {
            "rnn_rbm_train_frame": rnn_rbm_train_flops(),
            "rnn_rbm_jsb_epoch": jsb_epoch,
            "ais_jsb_test_100x1000": ais_jsb,
        },
        "device": args.device,
        "torch": torch.__version__,
        "peak_rss_mib": peak_rss_mib(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    if not args.json:
        for t, r in rates.items():
            print(f"{t} thread(s): " + ", ".join(f"{s} {v} GFLOP/s" for s, v in r.items()))
            print(f"  GEMM-bound: {bounds[t]}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
