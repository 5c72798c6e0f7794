"""Deep models and the scikit-learn drop-in, in one run (issue 6).

1. Test log-likelihood of an RBM, a DBN and a DBM on the bundled binarised 8×8 digits (1,438
   train / 359 test, the CLI demo's split), in nats per image, each ± its standard error:
   RBM ``−F(v) − log Z`` with AIS; DBN the variational bound with AIS on the top RBM
   (Salakhutdinov & Murray 2008); DBM the mean-field ELBO − AIS log Z (Salakhutdinov & Hinton
   2009). Bounds and AIS are *estimates*; the DBM AIS wall time is reported.
2. A ``Pipeline(BernoulliRBM, LogisticRegression)`` on the grey digits (stratified 80/20 split):
   accuracy and RBM fit time of ``rnnrbm.sklearn.BernoulliRBM`` next to scikit-learn's own with
   the same parameters, plus logistic regression on raw pixels.

    python benchmarks/bench_deep.py [--epochs 30] [--threads 1] [--ais-betas 10000] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings

import numpy as np
import torch

from bench_limits import peak_rss_mib
from rnnrbm import RBM
from rnnrbm.data.images import load_digits
from rnnrbm.models import DBM, DBN

HIDDEN = [100, 100]


def split(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(load_digits(binary=True).images)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = len(x) // 5
    return x[perm[n_test:]], x[perm[:n_test]]


def likelihoods(args: argparse.Namespace) -> dict:
    train, test = split(args.seed)
    ais = {"n_runs": args.ais_runs, "n_betas": args.ais_betas}
    fit = {"batch_size": 20, "momentum": 0.5, "seed": args.seed}
    rows = {}

    t = time.perf_counter()
    rbm = RBM(64, HIDDEN[0], k=5, method="pcd", seed=args.seed)
    rbm.fit(train, epochs=args.epochs, lr=0.05, **fit)
    fit_s = time.perf_counter() - t
    ll = rbm.log_likelihood(test, "ais", generator=torch.Generator().manual_seed(1), **ais)
    rows["RBM 64-100"] = {
        "test_ll": float(ll.value.mean()),
        "se": float(ll.se[0]),
        "estimator": ll.estimator,
        "fit_s": fit_s,
    }

    t = time.perf_counter()
    dbn = DBN(64, HIDDEN, k=5, method="pcd", seed=args.seed)
    dbn.fit(train, epochs=args.epochs, lr=0.05, **fit)
    fit_s = time.perf_counter() - t
    g = torch.Generator().manual_seed(2)
    log_z = dbn.log_partition("ais", generator=g, **ais)
    ll = dbn.log_likelihood(test, n_samples=100, generator=g, log_partition=log_z)
    se_z = float(log_z[1])
    se_mc2 = float((ll.se**2 - se_z**2).clamp_min(0).sum()) / len(test) ** 2
    rows["DBN 64-100-100"] = {
        "test_ll": float(ll.value.mean()),
        "se": math.sqrt(se_z**2 + se_mc2),
        "estimator": ll.estimator,
        "fit_s": fit_s,
    }

    t = time.perf_counter()
    dbm = DBM(64, HIDDEN, k=5, seed=args.seed)
    dbm.fit(train, epochs=args.epochs, lr=0.02, pretrain_lr=0.05, **fit)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    log_z = dbm.log_partition("ais", generator=torch.Generator().manual_seed(3), **ais)
    ais_s = time.perf_counter() - t
    t = time.perf_counter()
    ll = dbm.log_likelihood(test, log_partition=log_z)
    elbo_s = time.perf_counter() - t
    rows["DBM 64-100-100"] = {
        "test_ll": float(ll.value.mean()),
        "se": float(log_z[1]),
        "estimator": ll.estimator,
        "fit_s": fit_s,
        "ais_wall_s": ais_s,
        "elbo_wall_s": elbo_s,
    }
    return {
        "data": f"bundled 8x8 digits, binarised; {len(train)} train / {len(test)} test",
        "training": (
            f"{args.epochs} epochs, batch 20, SGD momentum 0.5, PCD-5; RBM/DBN lr 0.05; "
            "DBM pretraining lr 0.05 (doubled-input RBMs, CD-1) then joint lr 0.02 "
            "(10 mean-field sweeps)"
        ),
        "ais": f"{args.ais_runs} runs x {args.ais_betas} betas",
        "models": rows,
    }


def pipelines(args: argparse.Namespace) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import BernoulliRBM as SkBernoulliRBM

    from rnnrbm.sklearn import BernoulliRBM

    digits = load_digits(binary=False)
    X, y = digits.images.astype(np.float64), digits.labels
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    rbm_params = {
        "n_components": 100,
        "learning_rate": 0.06,
        "n_iter": args.sk_iter,
        "batch_size": 10,
        "random_state": 0,
    }
    candidates = {
        "scikit-learn BernoulliRBM (PCD-1)": SkBernoulliRBM(**rbm_params),
        "rnnrbm BernoulliRBM (PCD-1)": BernoulliRBM(**rbm_params),
        "rnnrbm BernoulliRBM (CD-1)": BernoulliRBM(method="cd", **rbm_params),
        "rnnrbm BernoulliRBM (PCD-5)": BernoulliRBM(k=5, **rbm_params),
    }

    def logistic() -> LogisticRegression:
        return LogisticRegression(C=args.C, max_iter=10_000)

    rows = {}
    t = time.perf_counter()
    raw = logistic().fit(X_tr, y_tr)
    rows["logistic regression on pixels"] = {
        "accuracy": float(raw.score(X_te, y_te)),
        "rbm_fit_s": None,
        "pipeline_fit_s": time.perf_counter() - t,
    }
    for name, rbm in candidates.items():
        t0 = time.perf_counter()
        features = rbm.fit_transform(X_tr)
        t1 = time.perf_counter()
        clf = logistic().fit(features, y_tr)
        t2 = time.perf_counter()
        rows[name] = {
            "accuracy": float(clf.score(rbm.transform(X_te), y_te)),
            "rbm_fit_s": t1 - t0,
            "pipeline_fit_s": t2 - t0,
        }
    return {
        "data": f"bundled 8x8 digits, grey levels in [0, 1]; {len(X_tr)} train / {len(X_te)} test",
        "rbm": rbm_params,
        "logistic": f"LogisticRegression(C={args.C}, max_iter=10000)",
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--epochs", type=int, default=30, help="epochs per phase / layer")
    ap.add_argument("--ais-runs", type=int, default=100)
    ap.add_argument("--ais-betas", type=int, default=10_000)
    ap.add_argument("--sk-iter", type=int, default=20, help="n_iter of the BernoulliRBMs")
    ap.add_argument("--C", type=float, default=100.0, help="logistic regression C")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch and BLAS threads (1: fastest at 64x100)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)

    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    with threadpool_limits(limits=args.threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        result = {
            "likelihood": likelihoods(args),
            "pipeline": pipelines(args),
        }
    result["env"] = {
        "torch": torch.__version__,
        "peak_rss_mib": peak_rss_mib(),
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
        "seconds": round(time.perf_counter() - start, 1),
        "command": " ".join(["python benchmarks/bench_deep.py", *(argv or sys.argv[1:])]),
    }
    if args.json:
        print(json.dumps(result, default=str))
        return result
    lik = result["likelihood"]
    print(f"Test log-likelihood, {lik['data']}; {lik['training']}; AIS {lik['ais']}")
    print(f"{'model':<16} {'nats/image':>20} {'fit s':>8}  estimator")
    for name, r in lik["models"].items():
        extra = f"  (AIS wall {r['ais_wall_s']:.1f} s)" if "ais_wall_s" in r else ""
        print(
            f"{name:<16} {r['test_ll']:>11.3f} ± {r['se']:<6.3f} {r['fit_s']:>8.1f}  "
            f"{r['estimator']}{extra}"
        )
    pipe = result["pipeline"]
    print(f"\nPipeline accuracy, {pipe['data']}; RBM {pipe['rbm']}; {pipe['logistic']}")
    print(f"{'features':<36} {'accuracy':>8} {'RBM fit s':>10} {'pipeline s':>11}")
    for name, r in pipe["rows"].items():
        fit_s = "-" if r["rbm_fit_s"] is None else f"{r['rbm_fit_s']:.2f}"
        print(f"{name:<36} {r['accuracy']:>8.3f} {fit_s:>10} {r['pipeline_fit_s']:>11.2f}")
    print(f"\n{result['env']}")
    return result


if __name__ == "__main__":
    main()
