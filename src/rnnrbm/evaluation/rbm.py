"""The protocol's NLL per frame for a plain RBM, which models frames independently.

A plain ``RBM`` trained on piano-roll frames has no memory: ``log p(v_t | v_<t) = log p(v_t)``,
so the NLL per frame is ``−mean_t log p(v_t)`` over all frames of a split (flat, as the
protocol). One ``log Z`` serves every frame: it is exact when
``core.partition.exact_is_affordable`` holds for one bias row, else one AIS estimate, whose
s.e. is then shared by all frames (it does not shrink with their number).
"""

from __future__ import annotations

from typing import Any

import torch

from rnnrbm.core.estimators import LogProb
from rnnrbm.core.partition import exact_is_affordable
from rnnrbm.data.polyphonic import PolyphonicDataset
from rnnrbm.evaluation.protocol import Method, _check_dataset
from rnnrbm.models.rbm import RBM
from rnnrbm.validation import InputTypeError, check_choice, check_positive_int, error_message

__all__ = ["evaluate_rbm", "rbm_log_likelihood"]


def _check_rbm(model: Any) -> RBM:
    if not isinstance(model, RBM):
        raise InputTypeError(
            error_message("model", "a plain RBM", type(model).__name__, "load an rbm checkpoint")
        )
    return model


def rbm_log_likelihood(
    model: RBM,
    frames: Any,
    *,
    method: Method = "auto",
    ais_runs: int = 100,
    ais_betas: int = 1000,
    generator: torch.Generator | None = None,
) -> LogProb:
    """``log p(v)`` of every row of ``frames`` ``(N, n_visible)`` under a plain RBM.

    ``method="auto"``: exact when ``core.partition.exact_is_affordable`` holds (one bias row),
    else AIS with ``ais_runs`` chains and ``ais_betas`` β steps from the model's base rates.
    """
    _check_rbm(model)
    if check_choice(method, "method", ("auto", "exact", "ais")) == "auto":
        gaussian = model.visible == "gaussian"
        affordable = exact_is_affordable(model.n_visible, model.n_hidden, gaussian=gaussian)
        method = "exact" if affordable else "ais"
    runs = check_positive_int(ais_runs, "ais_runs")
    betas = check_positive_int(ais_betas, "ais_betas", minimum=2)
    param = next(model.parameters())
    x = torch.as_tensor(frames, device=param.device).to(param.dtype)
    model.eval()
    with torch.no_grad():
        return model.log_likelihood(x, method, n_runs=runs, n_betas=betas, generator=generator)


def evaluate_rbm(
    model: RBM,
    dataset: PolyphonicDataset,
    split: str = "test",
    *,
    method: Method = "auto",
    ais_runs: int = 100,
    ais_betas: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """NLL per frame of a plain RBM on ``dataset[split]``: ``−mean_t log p(v_t)`` (nats).

    Returns a JSON-able dict ``{"dataset", "split", "model": "rbm", "nll": {"nll", "se",
    "n_frames", "estimator", "units"}, "accuracy": None}`` (a memoryless model predicts no
    frame from its history, so there is no frame accuracy). ``se`` is the s.e. of the one
    ``log Z`` (0 when exact); AIS draws come from a generator seeded with ``seed``.
    """
    frames = _check_dataset(dataset).frames(split)
    device = next(_check_rbm(model).parameters()).device
    gen = torch.Generator(device=device).manual_seed(int(seed))
    lp = rbm_log_likelihood(
        model, frames, method=method, ais_runs=ais_runs, ais_betas=ais_betas, generator=gen
    )
    n = int(lp.value.numel())
    return {
        "dataset": dataset.name,
        "split": split,
        "model": "rbm",
        "nll": {
            "nll": -float(lp.value.mean()),
            "se": float(lp.se[0]) if n else 0.0,  # one log Z shared by all frames
            "n_frames": n,
            "estimator": lp.estimator,
            "units": "nats per frame (summed over keys)",
        },
        "accuracy": None,
    }
