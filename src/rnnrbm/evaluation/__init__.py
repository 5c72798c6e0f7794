"""Evaluation: the benchmark protocol, plain-RBM evaluation, and scoring a user's piece.

* :mod:`~rnnrbm.evaluation.protocol` — NLL per frame and frame accuracy of temporal models
  (Boulanger-Lewandowski, Bengio & Vincent 2012), baselines, AIS base models.
* :mod:`~rnnrbm.evaluation.rbm` — the same NLL for a plain RBM (frames independent).
* :mod:`~rnnrbm.evaluation.scoring` — ``log p(v_t | v_<t)`` per frame of one roll or MIDI file.

Every ``method="auto"`` here computes ``log Z`` exactly when
``core.partition.exact_is_affordable`` holds, else by AIS.
"""

from rnnrbm.evaluation.protocol import (
    AccuracyReport,
    AISBase,
    FrameLogProbs,
    Method,
    NLLReport,
    accuracy_per_frame,
    ais_base_bias,
    evaluate,
    frame_accuracy,
    frame_log_probs,
    likelihood_interval,
    note_one_gram_log_likelihood,
    random_log_likelihood,
    sequence_nll,
    teacher_forced_frames,
)
from rnnrbm.evaluation.protocol import _check_dataset as _check_dataset  # kept importable
from rnnrbm.evaluation.rbm import evaluate_rbm, rbm_log_likelihood
from rnnrbm.evaluation.scoring import MusicModel, ScoreReport, score_midi, score_roll

__all__ = [
    "AISBase",
    "AccuracyReport",
    "FrameLogProbs",
    "Method",
    "MusicModel",
    "NLLReport",
    "ScoreReport",
    "accuracy_per_frame",
    "ais_base_bias",
    "evaluate",
    "evaluate_rbm",
    "frame_accuracy",
    "frame_log_probs",
    "likelihood_interval",
    "note_one_gram_log_likelihood",
    "random_log_likelihood",
    "rbm_log_likelihood",
    "score_midi",
    "score_roll",
    "sequence_nll",
    "teacher_forced_frames",
]
