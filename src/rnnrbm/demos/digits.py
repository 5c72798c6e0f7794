"""Image demos (the deeplearning.net RBM tutorial's pictures) for RBM, DBN and DBM.

``run_image_demo(out_dir, model="rbm" | "dbn" | "dbm")`` trains on the bundled 8×8 digits (or on
MNIST IDX files already on disk, ``mnist_dir``), then writes

* ``<model>-filters.png``: the first layer's filters, one tile per hidden unit (its weights);
* ``<model>-samples.png``: persistent sample chains started from test images, a row every
  ``steps_per_row`` Gibbs steps (the tutorial shows 1,000); the hidden state persists from row to
  row and each row shows the visible means ``E[v | h¹]``;

and returns a JSON-able dict with the test log-likelihood (RBM: AIS; DBN: variational bound with
AIS on the top RBM; DBM: mean-field ELBO − AIS log Z; each ± the s.e. of log Z), the paths and the
time. The CLI wires it as a subcommand; the function is the library entry point.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from rnnrbm.core.rbm import gibbs_chain
from rnnrbm.data.images import load_digits
from rnnrbm.data.mnist import load_mnist
from rnnrbm.models import DBM, DBN, RBM
from rnnrbm.plotting import save_filter_tiles, save_sample_chains
from rnnrbm.validation import (
    InputError,
    check_choice,
    check_positive_int,
    error_message,
    resolve_device,
)

__all__ = ["DEFAULTS", "run_image_demo"]

ModelName = Literal["rbm", "dbn", "dbm"]

# Per-model defaults for the 8×8 digits (hidden sizes, Gibbs steps, learning rate).
DEFAULTS: dict[str, dict[str, Any]] = {
    "rbm": {"hidden": [100], "k": 5, "lr": 0.05},
    "dbn": {"hidden": [100, 100], "k": 5, "lr": 0.05},
    "dbm": {"hidden": [100, 100], "k": 5, "lr": 0.02},
}


def _load(
    mnist_dir: str | os.PathLike[str] | None, n_train: int | None, n_test: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int], str]:
    if mnist_dir is not None:
        train = load_mnist(mnist_dir, "train", limit=n_train)
        test = load_mnist(mnist_dir, "test", limit=n_test)
        name = f"MNIST from {mnist_dir} (binarised at 0.5)"
        return torch.from_numpy(train.images), torch.from_numpy(test.images), train.shape, name
    digits = load_digits(binary=True)
    x = torch.from_numpy(digits.images)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_hold = len(x) // 5
    test, train = x[perm[:n_hold]], x[perm[n_hold:]]
    if n_train is not None:
        train = train[:n_train]
    if n_test is not None:
        test = test[:n_test]
    return train, test, digits.shape, "bundled 8x8 digits (binarised at 0.5)"


def _rbm_chains(
    rbm: RBM, start: torch.Tensor, n_rows: int, steps: int, generator: torch.Generator
) -> torch.Tensor:
    """Persistent RBM chains: the visible sample is the whole Markov state; rows show means."""
    f = rbm.frame
    rows, v = [start], start
    for _ in range(n_rows - 1):
        state = gibbs_chain(v, f.W, f.b_v, f.b_h, steps, generator)
        v = state.v
        rows.append(state.v_mean)
    return torch.stack(rows)


def _train(
    model: str,
    train: Tensor,
    hidden: list[int],
    k: int,
    lr: float,
    epochs: int,
    dev: torch.device,
    common: dict[str, Any],
) -> tuple[RBM | DBN | DBM, Tensor]:
    """The trained model and its first-layer weights ``(n_v, n_h1)`` (the filters)."""
    n_v, seed = train.shape[1], common["seed"]
    if model == "rbm":
        rbm = RBM(n_v, hidden[0], k=k, method="pcd", seed=seed, device=dev)
        rbm.fit(train, epochs=epochs, lr=lr, **common)
        return rbm, rbm.frame.W
    if model == "dbn":
        dbn = DBN(n_v, hidden, k=k, method="pcd", seed=seed, device=dev)
        dbn.fit(train, epochs=epochs, lr=lr, **common)
        return dbn, dbn.layers[0].frame.W
    dbm = DBM(n_v, hidden, k=k, seed=seed, device=dev)
    dbm.fit(train, epochs=epochs, lr=lr, pretrain_lr=2.5 * lr, **common)
    return dbm, dbm.W[0]


def _test_log_likelihood(
    trained: RBM | DBN | DBM, test: Tensor, ais_runs: int, ais_betas: int, gen: torch.Generator
) -> dict[str, Any]:
    """Mean test log-likelihood per image ± its s.e., and the estimator."""
    ais = {"n_runs": ais_runs, "n_betas": ais_betas, "generator": gen}
    if isinstance(trained, DBN):
        # s.e. of the mean: log Z_top's error is shared by every row, the Monte-Carlo errors of
        # the rows' bounds are independent.
        log_z = trained.log_partition("ais", **ais)
        ll = trained.log_likelihood(test, log_partition=log_z, generator=gen)
        se_z = float(log_z[1])
        se_mc2 = float((ll.se.double() ** 2 - se_z**2).clamp_min(0).sum()) / len(test) ** 2
        se = math.sqrt(se_z**2 + se_mc2)
    else:
        ll = trained.log_likelihood(test, "ais", **ais)
        se = float(ll.se[0])
    return {
        "test_log_likelihood": float(ll.value.mean()),
        "test_log_likelihood_se": se,
        "estimator": ll.estimator,
    }


def run_image_demo(
    out_dir: str | os.PathLike[str],
    *,
    model: ModelName = "rbm",
    epochs: int = 20,
    seed: int = 0,
    hidden: list[int] | None = None,
    k: int | None = None,
    lr: float | None = None,
    batch_size: int = 20,
    momentum: float = 0.5,
    n_chains: int = 10,
    n_rows: int = 10,
    steps_per_row: int = 100,
    mnist_dir: str | os.PathLike[str] | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    evaluate: bool = True,
    ais_runs: int = 100,
    ais_betas: int = 1000,
    device: str | None = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``model`` on digits, write filter tiles and persistent sample chains as PNG, and
    return ``{"model", "config", "layers", "dataset", "epochs", "figures", "paths", "seconds"}``.

    ``figures`` holds ``test_log_likelihood`` (nats per image, mean over test images),
    ``test_log_likelihood_se`` (s.e. of that mean: log Z's, plus the DBN bound's sampling
    error), ``estimator`` and the train/test sizes; the estimates are ``None`` with
    ``evaluate=False``. DBN and DBM pretrain each layer for
    ``epochs`` epochs too. ``hidden``, ``k`` and ``lr`` default to ``DEFAULTS[model]``."""
    check_choice(model, "model", DEFAULTS)
    check_positive_int(n_chains, "n_chains")
    check_positive_int(n_rows, "n_rows")
    check_positive_int(steps_per_row, "steps_per_row")
    start_time = time.perf_counter()
    dev = resolve_device(device)
    out = Path(out_dir)
    train, test, shape, dataset = _load(mnist_dir, n_train, n_test, seed)
    train, test = train.to(dev), test.to(dev)
    defaults = DEFAULTS[model]
    hidden = list(hidden or defaults["hidden"])
    if (model == "rbm") != (len(hidden) == 1):
        raise InputError(
            error_message(
                "hidden",
                "one layer size for 'rbm', two or more for 'dbn' / 'dbm'",
                repr(hidden),
                "pass e.g. --hidden 100 (rbm) or --hidden 100 100 (dbn, dbm)",
            )
        )
    k = k or defaults["k"]
    lr = lr or defaults["lr"]
    n_v = train.shape[1]
    common = {"batch_size": batch_size, "momentum": momentum, "seed": seed, "progress": progress}
    trained, filters = _train(model, train, hidden, k, lr, epochs, dev, common)
    gen = torch.Generator(device=dev).manual_seed(seed)
    start = test[:n_chains]
    with torch.no_grad():
        if isinstance(trained, RBM):
            chains = _rbm_chains(trained, start, n_rows, steps_per_row, gen)
        else:
            chains = trained.sample_chains(start, n_rows, steps_per_row, gen)
    label = f"{model.upper()} {'-'.join(map(str, [n_v, *hidden]))}"
    paths = {
        "filters": save_filter_tiles(
            filters.detach(), shape, out / f"{model}-filters.png", title=f"{label} filters"
        ),
        "samples": save_sample_chains(
            chains,
            shape,
            out / f"{model}-samples.png",
            steps_per_row=steps_per_row,
            title=f"{label} persistent chains",
        ),
    }
    figures: dict[str, Any] = {
        "test_log_likelihood": None,
        "test_log_likelihood_se": None,
        "estimator": None,
        "n_train": int(train.shape[0]),
        "n_test": int(test.shape[0]),
        "units": "nats per image",
    }
    if evaluate:
        figures |= _test_log_likelihood(trained, test, ais_runs, ais_betas, gen)
    return {
        "model": model,
        "config": trained.config(),
        "layers": [n_v, *hidden],
        "dataset": dataset,
        "epochs": epochs,
        "figures": figures,
        "paths": {name: str(p) for name, p in paths.items()},
        "seconds": round(time.perf_counter() - start_time, 2),
    }
