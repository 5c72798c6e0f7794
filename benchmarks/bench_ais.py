"""Time forward AIS (``log_partition_ais``) and its conservative twin, reverse AIS from a data
frame (``log_partition_reverse_ais``, the RAISE bound's partition function), over R RBMs that
share W (one bias row per RBM, as for the frames of a temporal model): the evaluation cost of the
RNN-RBM benchmark protocol (100 runs per frame, each bound).

    python benchmarks/bench_ais.py                     # 4,725 RBMs x 100 runs x 1,000 betas, both
    python benchmarks/bench_ais.py --rbms 100 --json    # quick; prints one JSON object
    python benchmarks/bench_ais.py --estimators forward # one estimator

Throughput is reported in chain-steps per second (R·M chains × K annealing steps); each step is
two GEMMs with the (88, 150) weights plus the sampling and the weight update.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from bench_limits import ais_flops, gemm_gflops, peak_rss_mib
from rnnrbm.core.partition import log_partition_ais, log_partition_reverse_ais


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rbms", type=int, default=4725, help="R: bias rows (frames)")
    ap.add_argument("--runs", type=int, default=100, help="M: AIS runs per RBM")
    ap.add_argument("--betas", type=int, default=1000, help="K: annealing steps")
    ap.add_argument("--visible", type=int, default=88)
    ap.add_argument("--hidden", type=int, default=150)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--chunk-rows", type=int, default=None, help="rows of R·M per chunk")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--estimators",
        default="forward,reverse",
        help="comma-separated: forward (AIS) and/or reverse (RAISE's reverse AIS from a frame)",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    g = torch.Generator(device="cpu").manual_seed(args.seed)
    n_v, n_h, R = args.visible, args.hidden, args.rbms
    # A trained-looking RBM: small weights, per-frame biases that differ across frames.
    W = (0.1 * torch.randn(n_v, n_h, generator=g)).to(device, dtype)
    b_v = (-2.0 + 0.5 * torch.randn(R, n_v, generator=g)).to(device, dtype)
    b_h = (0.5 * torch.randn(R, n_h, generator=g)).to(device, dtype)
    # A sparse binary frame per RBM (~4 of 88 keys, as in chorales): reverse AIS starts there.
    frames = (torch.rand(R, n_v, generator=g) < 4 / n_v).to(device, dtype)
    estimators = [e.strip() for e in args.estimators.split(",") if e.strip()]
    if not estimators or set(estimators) - {"forward", "reverse"}:
        ap.error(f"--estimators: expected forward and/or reverse, got {args.estimators!r}")

    chain_steps = R * args.runs * args.betas
    # The limit: the products of every chain step at this machine's GEMM rate for the chunk's
    # shape, measured in this run (the default CPU chunk: ~3 MiB of buffers, core.partition).
    default_chunk = max(32, 3 * 2**20 // ((6 * n_h + 8 * n_v) * 4))
    rows = min(R * args.runs, args.chunk_rows or default_chunk)
    rate = gemm_gflops(rows, n_v, n_h, device=args.device)
    bound_s = ais_flops(R, args.runs, args.betas, n_v, n_h) / (rate * 1e9)
    jsb = 4725 * 100 * 1000  # chain steps of the protocol over the JSB test set
    out: dict = {
        "rbms": R,
        "runs": args.runs,
        "betas": args.betas,
        "visible": n_v,
        "hidden": n_h,
        "threads": args.threads,
        "device": str(device),
        "dtype": args.dtype,
        "chunk_rows": args.chunk_rows,
        "gemm_gflops_at_chunk_rows": round(rate, 1),
        "gemm_bound_s": round(bound_s, 3),
    }
    for name in estimators:
        gen = torch.Generator(device=device).manual_seed(args.seed + 1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        cpu0, t0 = time.process_time(), time.perf_counter()
        if name == "forward":
            res = log_partition_ais(
                W, b_v, b_h, n_runs=args.runs, n_betas=args.betas, generator=gen,
                chunk_rows=args.chunk_rows,
            )  # fmt: skip
        else:
            starts = frames.unsqueeze(1).expand(R, args.runs, n_v)
            res = log_partition_reverse_ais(
                W, b_v, b_h, starts, n_betas=args.betas, generator=gen, chunk_rows=args.chunk_rows
            )
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        out[name] = {
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "chain_steps_per_s": round(chain_steps / wall),
            "ns_per_chain_step": round(wall / chain_steps * 1e9, 1),
            "fraction_of_limit": round(bound_s / wall, 2),
            "jsb_test_100x1000_s_at_this_rate": round(wall / chain_steps * jsb, 1),
            "mean_log_z": float(res.log_z.mean()),
            "mean_log_z_se": float(res.log_z_se.mean()),
        }
    out.update(
        torch=torch.__version__,
        peak_rss_mib=peak_rss_mib(),
        machine=platform.processor() or platform.machine(),
        load_avg_1min=os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    )
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"AIS: {R} RBMs x {args.runs} runs x {args.betas} betas, {n_v}x{n_h}, "
            f"{args.threads} threads, {device}; GEMM bound {bound_s:.2f} s"
        )
        for name in estimators:
            r = out[name]
            print(
                f"  {name:8s} {r['wall_s']:.2f} s wall ({r['cpu_s']:.2f} s CPU), "
                f"{r['ns_per_chain_step']} ns per chain step, {r['fraction_of_limit']:.0%} of the "
                f"limit; mean log Z {r['mean_log_z']:.3f} ± {r['mean_log_z_se']:.3f} (s.e.)"
            )
    return out


if __name__ == "__main__":
    main()
