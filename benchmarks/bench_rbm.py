"""RBM training speed: rnnrbm vs scikit-learn's BernoulliRBM vs the PyPI package ``rbms``.

The same work in one run (issue 3): Bernoulli RBM 784 × 500, batch 100, PCD-1, plain SGD
lr 0.01, float32, 10,000 binary rows (bundled digits upsampled to 28×28 and thresholded),
2 threads. Reports seconds per epoch, ratios, and achieved GFLOP/s against this machine's
measured fp32 GEMM rate (also at batch 1,000).

    python benchmarks/bench_rbm.py [--epochs 3] [--threads 2] [--device cpu] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from bench_limits import peak_rss_mib
from rnnrbm import RBM
from rnnrbm.data.images import load_digits, upsample_binary

N_V, N_H = 784, 500


def gemm_rate(device: torch.device, m: int, k: int, n: int, repeats: int = 20) -> float:
    """Measured fp32 GFLOP/s of an (m × k) @ (k × n) product (best of ``repeats``)."""
    a = torch.randn(m, k, device=device)
    b = torch.randn(k, n, device=device)
    best = float("inf")
    for _ in range(repeats + 2):
        _sync(device)
        t = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * m * k * n / best / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def pcd_flops_per_batch(batch: int, chains: int, k: int = 1) -> float:
    """GEMM FLOPs of one PCD-k update as rnnrbm computes it: k·(v→h, h→v) on the chains, one
    stacked free-energy forward and one weight-gradient product over batch + chains rows."""
    return 2 * N_V * N_H * (2 * k * chains + 2 * (batch + chains))


def time_epochs(run_epoch: Callable[[], None], epochs: int, sync: Callable[[], None]) -> float:
    """Median seconds per epoch after one warm-up epoch."""
    run_epoch()
    times = []
    for _ in range(epochs):
        sync()
        t = time.perf_counter()
        run_epoch()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_rnnrbm(x: torch.Tensor, batch: int, epochs: int, device: torch.device) -> float:
    """Median epoch time inside ONE ``fit`` call (input validation happens once per fit)."""
    from rnnrbm.training import Callback

    times: list[float] = []

    class EpochTimer(Callback):
        def on_fit_start(self, state, n_batches, config):  # type: ignore[no-untyped-def]
            _sync(device)
            self.t = time.perf_counter()

        def on_epoch_end(self, state, metrics):  # type: ignore[no-untyped-def]
            _sync(device)
            now = time.perf_counter()
            times.append(now - self.t)
            self.t = now

    rbm = RBM(N_V, N_H, k=1, method="pcd", n_chains=batch, seed=0, device=device)
    rbm.fit(
        x.to(device),
        epochs=epochs + 1,
        batch_size=batch,
        lr=0.01,
        optimizer="sgd",
        callbacks=(EpochTimer(),),
    )
    return statistics.median(times[1:])  # the first epoch is the warm-up


def bench_sklearn(x: np.ndarray, epochs: int) -> float | str:
    try:
        from sklearn.neural_network import BernoulliRBM
    except ImportError as exc:  # pragma: no cover - reported, not fatal
        return f"not run: {exc}"

    def run() -> None:
        # scikit-learn's own fit: one epoch of mini-batch PCD-1 per call (n_iter=1).
        BernoulliRBM(
            n_components=N_H, learning_rate=0.01, batch_size=100, n_iter=1, random_state=0
        ).fit(x)

    return time_epochs(run, epochs, lambda: None)


def bench_rbms(x: torch.Tensor, epochs: int, device: torch.device) -> float | str:
    """The PyPI package ``rbms`` (DsysDML): its own PCD update kernel ``fit_batch_pcd`` with its
    SGD, minus its per-update HDF5 logging (which favours it)."""
    try:
        from rbms.bernoulli_bernoulli.classes import BBRBM
        from rbms.training.pcd import fit_batch_pcd
    except ImportError as exc:
        return f"not run: {exc} (pip install rbms -c constraints.txt)"
    data = x.to(device)
    params = BBRBM(
        weight_matrix=torch.randn(N_V, N_H, device=device) * 0.01,
        vbias=torch.zeros(N_V, device=device),
        hbias=torch.zeros(N_H, device=device),
    )
    params.init_grad()
    chains = params.init_chains(100)
    weights = torch.ones(len(data), 1, device=device)
    optimizer = torch.optim.SGD(params.parameters(), lr=0.01, maximize=True)

    def run() -> None:
        nonlocal chains
        with torch.no_grad():
            for _ in range(0, len(data), 100):
                idx = torch.randperm(len(data), device=device)[:100]
                optimizer.zero_grad(set_to_none=False)
                chains, _ = fit_batch_pcd(
                    (data[idx], weights[idx]), chains, params, 1, 1.0, centered=False
                )
                optimizer.step()

    return time_epochs(run, epochs, lambda: _sync(device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    device = torch.device(args.device)
    images = upsample_binary(load_digits(binary=False), 28, n=args.rows, seed=0)
    x_np = images.images.astype(np.float32)
    x = torch.from_numpy(x_np)

    peak_big = gemm_rate(device, 2048, 2048, 2048)
    peak_rbm = gemm_rate(device, 1000, N_V, N_H)
    result: dict[str, object] = {
        "benchmark": "rbm-784x500-pcd1-sgd",
        "rows": args.rows,
        "threads": args.threads,
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "gemm_gflops_2048": round(peak_big, 1),
    }
    for batch in (100, 1000):
        # the limit that binds: the GEMM rate at this batch's own shape (batch × 784 × 500)
        shape_rate = peak_rbm if batch == 1000 else gemm_rate(device, batch, N_V, N_H)
        sec = bench_rnnrbm(x, batch, args.epochs, device)
        flops = pcd_flops_per_batch(batch, batch) * (args.rows / batch)
        result[f"gemm_gflops_{batch}x784x500"] = round(shape_rate, 1)
        result[f"rnnrbm_s_per_epoch_b{batch}"] = round(sec, 4)
        result[f"rnnrbm_gflops_b{batch}"] = round(flops / sec / 1e9, 1)
        result[f"rnnrbm_fraction_of_gemm_b{batch}"] = round(flops / sec / 1e9 / shape_rate, 3)
        result[f"rnnrbm_fraction_of_2048_gemm_b{batch}"] = round(flops / sec / 1e9 / peak_big, 3)
    base = float(result["rnnrbm_s_per_epoch_b100"])  # type: ignore[arg-type]
    if not args.skip_peers:
        if device.type == "cpu":
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=args.threads):
                sk = bench_sklearn(x_np, args.epochs)  # float32, as rnnrbm
            result["sklearn_s_per_epoch"] = sk if isinstance(sk, str) else round(sk, 4)
            if not isinstance(sk, str):
                result["speedup_vs_sklearn"] = round(sk / base, 2)
        rb = bench_rbms(x, args.epochs, device)
        result["rbms_s_per_epoch"] = rb if isinstance(rb, str) else round(rb, 4)
        if not isinstance(rb, str):
            result["speedup_vs_rbms"] = round(rb / base, 2)
    result["peak_rss_mib"] = peak_rss_mib()
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:34s} {v}")


if __name__ == "__main__":
    main()
