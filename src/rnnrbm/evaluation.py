"""The benchmark protocol of Boulanger-Lewandowski et al. (2012), DESIGN §4.

NLL per frame = −(flat mean over *all* test frames of all sequences, first frames included) of
``log p(v_t | v_<t)`` in nats summed over the 88 keys. This module holds the protocol's report
type and its reference baselines; the model-based figures plug in as the temporal models land.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "NLLReport",
    "note_one_gram_log_likelihood",
    "random_log_likelihood",
]

ONE_GRAM_CLAMP = 1e-6


@dataclass(frozen=True)
class NLLReport:
    """One protocol figure: ``nll`` nats per frame (± ``se``), how it was estimated, on what."""

    nll: float
    se: float
    n_frames: int
    estimator: str
    dataset: str = ""
    split: str = "test"

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "units": "nats per frame (summed over keys)"}

    def __str__(self) -> str:
        pm = f" ± {self.se:.3f}" if self.se > 0 else ""
        return (
            f"{self.dataset} {self.split}: NLL {self.nll:.3f}{pm} nats/frame "
            f"over {self.n_frames} frames ({self.estimator})"
        )


def note_one_gram_log_likelihood(
    train_frames: np.ndarray, test_frames: np.ndarray, *, clamp: float = ONE_GRAM_CLAMP
) -> float:
    """Mean log-likelihood per test frame of independent per-key Bernoullis fitted on training
    frames (the paper's "Note 1-Gram" row).

    Keys never played in training would give −∞ under plain maximum likelihood (JSB, Nottingham
    and MuseData test sets contain such notes), so ``p`` is clamped to ``[clamp, 1 − clamp]``;
    any clamp from 1e−12 to 1e−4 reproduces the published −11.05 / −10.25 / −11.51 / −11.06
    (Piano-midi.de / Nottingham / MuseData / JSB) to two decimals.
    """
    p = np.clip(np.asarray(train_frames, dtype=np.float64).mean(0), clamp, 1.0 - clamp)
    x = np.asarray(test_frames, dtype=np.float64)
    log_p = x @ np.log(p) + (1.0 - x) @ np.log1p(-p)
    return float(log_p.mean())


def random_log_likelihood(n_keys: int = 88) -> float:
    """Every key on with probability ½: ``n_keys · ln ½`` (−61.00 for 88 keys)."""
    return n_keys * math.log(0.5)
