"""Scoring a user's piece: ``log p(v_t | v_<t)`` per frame of one roll or MIDI file.

The library side of ``rnnrbm score``. A temporal model goes through :func:`frame_log_probs`
(exact for NADE frames, and for RBM frames when ``core.partition.exact_is_affordable`` holds,
else one AIS run batched over all frames, with its s.e.; Salakhutdinov & Murray 2008); a plain
RBM models frames independently: ``log p(v_t)`` with one ``log Z`` for every frame.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rnnrbm.core.estimators import LogProb
from rnnrbm.evaluation.protocol import METHODS, FrameLogProbs, Method, frame_log_probs
from rnnrbm.evaluation.rbm import rbm_log_likelihood
from rnnrbm.models.rbm import RBM
from rnnrbm.models.sequence import SequenceModel
from rnnrbm.music.midi import MidiReadOptions, read_midi
from rnnrbm.music.pianoroll import check_roll
from rnnrbm.validation import (
    InputError,
    InputTypeError,
    check_choice,
    check_positive_int,
    error_message,
)

__all__ = ["MusicModel", "ScoreReport", "score_midi", "score_roll"]

MusicModel = SequenceModel | RBM


@dataclass(frozen=True)
class ScoreReport:
    """``log p(v_t | v_<t)`` of one piece: per frame (nats), mean per frame ± s.e., estimator."""

    per_frame: np.ndarray
    per_frame_se: np.ndarray
    estimator: str
    source: str = ""
    transposition: int = 0

    @property
    def n_frames(self) -> int:
        return int(self.per_frame.shape[0])

    @property
    def mean(self) -> float:
        """Mean log-likelihood per frame (nats): the benchmark's figure, sign flipped."""
        return float(self.per_frame.mean())

    @property
    def se(self) -> float:
        """S.e. of ``mean`` from the AIS estimates (0 when exact); frames' AIS runs are
        independent, so variances add."""
        return float(np.sqrt((self.per_frame_se**2).sum()) / max(self.n_frames, 1))

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.source,
            "log_likelihood_per_frame": self.mean,
            "log_likelihood_per_frame_se": self.se,
            "nll_per_frame": -self.mean,
            "total_log_likelihood": float(self.per_frame.sum()),
            "n_frames": self.n_frames,
            "estimator": self.estimator,
            "units": "nats (natural log, summed over the 88 keys)",
            "transposition_semitones": self.transposition,
            "per_frame": [round(float(x), 6) for x in self.per_frame],
        }


def score_roll(
    model: MusicModel,
    roll: np.ndarray,
    *,
    method: Method = "auto",
    ais_runs: int = 100,
    ais_betas: int = 1000,
    seed: int = 0,
    source: str = "",
    transposition: int = 0,
) -> ScoreReport:
    """Per-frame ``log p(v_t | v_<t)`` of one ``(T, 88)`` roll (an RBM: ``log p(v_t)``).

    ``method="auto"``: exact for NADE frames, or when ``core.partition.exact_is_affordable``
    holds, else AIS with ``ais_runs`` chains and ``ais_betas`` temperatures, one batched run over
    all frames (temporal models go through :func:`frame_log_probs`, whose AIS base follows
    each frame's Gibbs marginals; a plain RBM, through :func:`rbm_log_likelihood`, uses its data
    base rates).
    """
    check_choice(method, "method", METHODS)
    roll = check_roll(roll, source or "roll")
    if len(roll) == 0:
        raise InputError(
            error_message(source or "roll", "at least one frame", "an empty piece", "pass notes")
        )
    runs = check_positive_int(ais_runs, "ais_runs")
    betas = check_positive_int(ais_betas, "ais_betas", minimum=2)
    if not isinstance(model, SequenceModel | RBM):
        raise InputTypeError(
            error_message(
                "model", "a temporal model or an rbm", type(model).__name__, "load a music model"
            )
        )
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(int(seed))
    model.eval()
    lp: FrameLogProbs | LogProb
    if isinstance(model, SequenceModel):
        lp = frame_log_probs(
            model, [roll], method=method, ais_runs=runs, ais_betas=betas, seed=int(seed)
        )
    else:
        lp = rbm_log_likelihood(
            model, roll, method=method, ais_runs=runs, ais_betas=betas, generator=gen
        )
    return ScoreReport(
        lp.value.double().cpu().numpy(),
        lp.se.double().cpu().numpy(),
        lp.estimator,
        source,
        transposition,
    )


def score_midi(
    model: MusicModel,
    path: str | os.PathLike[str],
    *,
    options: MidiReadOptions | None = None,
    **score_options: Any,
) -> ScoreReport:
    """Read ``path`` (raising ``MidiFileError`` naming it when unreadable) and score it."""
    read = read_midi(path, options or MidiReadOptions())
    if not len(read.roll):
        raise InputError(
            error_message(
                f"MIDI file {str(path)!r}", "at least one note or frame", "an empty piece", "fix"
            )
        )
    return score_roll(
        model, read.roll, source=str(path), transposition=read.transposition, **score_options
    )
