"""``rnnrbm demo-digits``: RBM, DBN or DBM on the bundled 8×8 digits (or MNIST on disk)."""

from __future__ import annotations

import argparse
from typing import Any

from rnnrbm.cli.common import emit


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "demo-digits", parents=[common], help="RBM / DBN / DBM on digits: filters and samples"
    )
    p.add_argument("--model", choices=("rbm", "dbn", "dbm"), default="rbm")
    p.add_argument("--out", default="demo-digits", help="output folder (default: demo-digits)")
    p.add_argument("--epochs", type=int, default=30, help="epochs (DBN/DBM: per layer too)")
    p.add_argument(
        "--hidden", type=int, nargs="+", default=None, help="units per layer (rbm 100; 100 100)"
    )
    p.add_argument("--k", type=int, default=None, help="Gibbs steps of PCD (default 5)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (rbm/dbn .05, dbm .02)")
    p.add_argument("--steps-per-row", type=int, default=100, help="Gibbs steps between rows")
    p.add_argument("--mnist", default=None, help="a folder with MNIST IDX files (no download)")
    p.add_argument("--n-train", type=int, default=None, help="first N training images only")
    p.add_argument("--n-test", type=int, default=None, help="first N test images only")
    p.add_argument("--ais-runs", type=int, default=100, help="AIS runs (0: no evaluation)")
    p.add_argument("--ais-betas", type=int, default=3000, help="AIS temperatures (3000)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from rnnrbm.demos.digits import run_image_demo

    torch.manual_seed(args.seed)
    res = run_image_demo(
        args.out, model=args.model, epochs=args.epochs, seed=args.seed, hidden=args.hidden,
        k=args.k, lr=args.lr, steps_per_row=args.steps_per_row, mnist_dir=args.mnist,
        n_train=args.n_train, n_test=args.n_test, evaluate=args.ais_runs > 0,
        ais_runs=max(args.ais_runs, 1), ais_betas=args.ais_betas, device=args.device,
        progress=not args.json,
    )  # fmt: skip
    res = {"command": "demo-digits", **res}
    fig = res["figures"]
    shape = "-".join(str(n) for n in res["layers"])
    lines = [f"trained a {args.model.upper()} {shape} on {res['dataset']}, {args.epochs} epochs"]
    if fig["test_log_likelihood"] is not None:
        lines.append(
            f"test log-likelihood {fig['test_log_likelihood']:.3f} ± "
            f"{fig['test_log_likelihood_se']:.3f} nats per image over {fig['n_test']} images "
            f"({fig['estimator']})"
        )
    lines += [f"wrote {k}: {v}" for k, v in res["paths"].items()]
    lines.append(f"done in {res['seconds']:.0f} s")
    emit(args, res, lines)
    return 0
