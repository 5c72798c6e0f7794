"""The ``rnnrbm`` command line: a thin layer over the library.

argparse (standard library) keeps the CLI dependency-free. Every command takes ``--json`` and then
prints exactly one JSON object on stdout; user errors are one line on stderr naming the file or
field and the fix, with exit code 2 (``--verbose`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

import rnnrbm
from rnnrbm.validation import CheckpointError, DataFormatError, InputError, InputTypeError

__all__ = ["main"]

USER_ERRORS = (InputError, InputTypeError, DataFormatError, CheckpointError, FileNotFoundError)


def _emit(args: argparse.Namespace, result: dict[str, Any], lines: Sequence[str]) -> None:
    if args.json:
        print(json.dumps(result, default=str))
    else:
        for line in lines:
            print(line)


def cmd_env(args: argparse.Namespace) -> int:
    """Versions, device and threads — paste this into bug reports."""
    result = {
        "rnnrbm": rnnrbm.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "default_dtype": str(torch.get_default_dtype()),
    }
    _emit(args, result, [f"{k}: {v}" for k, v in result.items()])
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Train an RBM on the bundled 8×8 digits; write filter tiles and sample chains as PNG."""
    from rnnrbm.data.images import load_digits
    from rnnrbm.models import RBM
    from rnnrbm.plotting import save_curves, save_filter_tiles, save_sample_chains

    start = time.perf_counter()
    torch.manual_seed(args.seed)
    out = Path(args.out)
    digits = load_digits(binary=True)
    x = torch.from_numpy(digits.images)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))
    n_test = len(x) // 5
    test, train = x[perm[:n_test]], x[perm[n_test:]]
    rbm = RBM(64, args.hidden, k=args.k, method="pcd", n_chains=100, init_std=0.01, seed=args.seed)
    rbm.fit(
        train,
        valid=test,
        epochs=args.epochs,
        batch_size=20,
        lr=args.lr,
        optimizer="sgd",
        momentum=0.5,
        seed=args.seed,
        progress=not args.json,
    )
    gen = torch.Generator().manual_seed(args.seed)
    chains = [test[:10].clone()]
    for _ in range(9):  # a row every 100 Gibbs steps, as in the deeplearning.net tutorial
        chains.append(rbm.sample(10, steps=100, generator=gen, start=chains[-1]))
    ll_test = rbm.log_likelihood(test, "ais", n_runs=100, n_betas=args.ais_betas, generator=gen)
    ll_train = rbm.log_likelihood(train, "ais", n_runs=100, n_betas=args.ais_betas, generator=gen)
    history = rbm.fit_result_.history
    paths = {
        "filters": save_filter_tiles(rbm.frame.W.detach(), (8, 8), out / "filters.png"),
        "samples": save_sample_chains(torch.stack(chains), (8, 8), out / "samples.png"),
        "curves": save_curves(
            {
                "reconstruction cross-entropy (test, nats)": [h["recon_xent"] for h in history],
                "−pseudo-log-likelihood (test, nats)": [h["neg_pseudo_loglik"] for h in history],
            },
            out / "curves.png",
            ylabel="nats per example",
        ),
    }
    result = {
        "command": "demo",
        "dataset": "bundled 8x8 digits (binarised), 1438 train / 359 test",
        "model": rbm.config(),
        "epochs": args.epochs,
        "test_log_likelihood": float(ll_test.value.mean()),
        "test_log_likelihood_se": float(ll_test.se[0]),
        "train_log_likelihood": float(ll_train.value.mean()),
        "estimator": ll_test.estimator,
        "units": "nats per image",
        "paths": {k: str(v) for k, v in paths.items()},
        "seconds": round(time.perf_counter() - start, 2),
    }
    _emit(
        args,
        result,
        [
            f"trained {rbm.n_visible}x{rbm.n_hidden} RBM (PCD-{rbm.k}) for {args.epochs} epochs",
            f"test log-likelihood: {result['test_log_likelihood']:.3f} ± "
            f"{result['test_log_likelihood_se']:.3f} nats/image ({ll_test.estimator}; "
            f"train {result['train_log_likelihood']:.3f})",
            *(f"wrote {k}: {v}" for k, v in result["paths"].items()),
            f"done in {result['seconds']} s",
        ],
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnrbm", description="Energy-based models of binary data and sequences."
    )
    parser.add_argument("--version", action="version", version=f"rnnrbm {rnnrbm.__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object of results")
    common.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("env", parents=[common], help="versions, device and threads")
    p.set_defaults(func=cmd_env)

    p = sub.add_parser("demo", parents=[common], help="train an RBM on bundled digits")
    p.add_argument("--out", default="demo", help="output folder (default: demo)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--ais-betas", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except USER_ERRORS as exc:
        if args.verbose:
            raise
        print(f"rnnrbm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rnnrbm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
