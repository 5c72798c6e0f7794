"""A two-layer deep Boltzmann machine on the bundled 8×8 digits: fit, log-likelihood, filters.

Salakhutdinov & Hinton (2009): greedy pretraining with doubled inputs, then joint PCD with
mean-field posteriors. The test figure is the mean-field lower bound minus an AIS estimate of
log Z (nats per image). Run: ``python examples/digits_dbm.py --out runs/digits``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from rnnrbm.data.images import load_digits
from rnnrbm.models import DBM
from rnnrbm.plotting import save_filter_tiles


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="runs/digits")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--hidden", type=int, nargs=2, default=[100, 100])
    ap.add_argument("--ais-betas", type=int, default=3000)
    args = ap.parse_args(argv)

    digits = load_digits()  # 1,797 images, binarised at 0.5
    x = torch.from_numpy(digits.images)
    train, test = x[:1438], x[1438:]
    dbm = DBM(64, args.hidden, seed=0).fit(train, epochs=args.epochs, batch_size=20)
    lp = dbm.log_likelihood(
        test, "ais", n_runs=100, n_betas=args.ais_betas, generator=torch.Generator().manual_seed(0)
    )
    mean, se = float(lp.value.mean()), float(lp.se.mean())
    print(f"test log-likelihood {mean:.2f} ± {se:.2f} nats per image ({lp.estimator})")
    path = save_filter_tiles(
        dbm.W[0].detach().cpu(),  # (64, n_h1): each first-layer unit's incoming weights
        digits.shape,
        Path(args.out) / "dbm-filters.png",
        title="DBM first-layer filters",
    )
    print("wrote", path)
    return {"log_likelihood": mean, "se": se, "filters": path}


if __name__ == "__main__":
    main()
