"""The stages of a recipe and their callbacks: the paper's schedule as calls to ``training.fit``.

Boulanger-Lewandowski, Bengio & Vincent (2012, "BL2012") §5 train an RNN-RBM in three stages,
and ``recipes.runner.run`` runs them through THE loop (no loop of its own):

1. **Frame pretraining** — the frame estimator (RBM or NADE) alone on the training frames taken
   as independent examples (offsets zero): ``fit(FramePretraining(model), RowBatches(frames))``.
2. **Recurrence pretraining** (optional) — the recurrence alone as an RNN that predicts each
   frame with independent per-key Bernoullis of logits ``b_v + Δb_v(t)`` (the per-note
   cross-entropy of BL2012 §5): :class:`RecurrencePretraining`.
3. **Sequence training** — the whole model on sequence batches (CD-k surrogate or exact NLL),
   with gradient clipping, early stopping on the validation NLL and the best epoch restored.

**Validation monitor.** ``SequenceModel.validate`` only reports exact NLLs (NADE, tiny RBMs).
For RBM frames the runner passes ``fit`` a monitor that estimates the validation NLL per frame with
the evaluation protocol at cheaper AIS settings (``valid_ais_runs`` × ``valid_ais_betas``,
default 10 × 300 with the per-frame Gibbs base, every ``valid_every`` epochs, on at most
``valid_frames`` frames). The AIS generator is re-seeded identically at every check (common
random numbers), so the epoch-to-epoch differences the early stopping compares are not
dominated by AIS noise. Cheap AIS under-estimates ``log Z``, so the monitored figure leans
optimistic (measured on a JSB RNN-RBM: 10 × 300 read 0.06 nats/frame below 20 × 1,000, while
8 × 100 read 0.23 below); it selects epochs, it is not the reported result.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnrbm.data.batching import SequenceBatches
from rnnrbm.data.streaming import CorpusSplit, StreamingBatches
from rnnrbm.evaluation import Method, sequence_nll
from rnnrbm.models.sequence import (
    FramePretraining,
    SequenceEpochs,
    SequenceModel,
)
from rnnrbm.training import Callback, RowBatches, TrainConfig, TrainResult, TrainState, fit
from rnnrbm.validation import check_positive_int

__all__ = [
    "BestWeights",
    "RecurrencePretraining",
    "TimeBudget",
    "ValidationMonitor",
    "pretrain_frames",
    "pretrain_recurrence",
    "sequence_epochs",
]


# ----------------------------------------------------------------------------- stage 2 model
class RecurrencePretraining(nn.Module):
    """The recurrence of a sequence model as an RNN with per-key logistic outputs (BL2012 §5).

    ``loss((rolls, mask))`` = mean over real frames of ``Σ_keys BCE(σ(b_v + Δb_v(t)), v_t)``
    (nats per frame: the NLL of a model whose keys are independent given the past). Only the
    recurrence's parameters are trained; ``b_v`` is read (frozen) from the estimator.
    """

    def __init__(self, model: SequenceModel) -> None:
        super().__init__()
        self.recurrence = model.recurrence
        self._model = [model]  # a list: not a submodule, so parameters() is the recurrence's

    def loss(
        self, batch: tuple[Tensor, Tensor], *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        model = self._model[0]
        rolls, mask, loss_mask = model._unpack(batch)
        d_v = self.recurrence(rolls, mask, model.estimator)[0]
        logits = model.estimator.b_v.detach() + d_v
        xent = F.binary_cross_entropy_with_logits(logits, rolls, reduction="none").sum(-1)
        return xent[loss_mask].mean(), {}


# ----------------------------------------------------------------------------- callbacks
class TimeBudget(Callback):
    """Stop after the epoch that would otherwise overrun ``seconds`` (counted from ``start``).

    The next epoch is assumed to take as long as the last one. ``log`` keeps
    ``(epoch, seconds since start)`` per epoch."""

    def __init__(self, seconds: float | None, start: float | None = None) -> None:
        self.seconds, self.start = seconds, time.perf_counter() if start is None else start
        self.log: list[tuple[int, float]] = []
        self._last = self.start

    def on_fit_start(self, state: TrainState, n_batches: int, config: TrainConfig) -> None:
        self._last = time.perf_counter()

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        now = time.perf_counter()
        self.log.append((state.epoch, now - self.start))
        if self.seconds is not None and now - self.start + (now - self._last) > self.seconds:
            state.stopped_early = True
        self._last = now


class BestWeights(Callback):
    """Keep a copy of the weights of the best epoch (``TrainState.best_epoch``) in memory."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.state: dict[str, Tensor] | None = None
        self.epoch: int | None = None

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        if state.best_epoch is not None and state.best_epoch == state.epoch:
            self.state = copy.deepcopy(self.model.state_dict())
            self.epoch = state.epoch

    def restore(self) -> bool:
        if self.state is None:
            return False
        self.model.load_state_dict(self.state)
        return True


class ValidationMonitor:
    """``validate(valid) -> {"valid_nll": …}`` every ``every`` epochs (see the module doc).

    ``method="auto"``: exact for NADE / tiny RBM frames; AIS at ``ais_runs`` × ``ais_betas``
    otherwise, with the same AIS seed at every check; ``"raise"``: the conservative bound
    (reverse AIS from each frame, Burda et al. 2015), for choosing an epoch by a figure that
    errs high rather than low. ``max_frames`` keeps the first sequences
    of the validation split up to that many frames (all of it when None).
    """

    def __init__(
        self,
        model: SequenceModel,
        *,
        every: int = 1,
        method: Method = "auto",
        ais_runs: int = 10,
        ais_betas: int = 300,
        max_frames: int | None = None,
        seed: int = 0,
    ) -> None:
        self.model, self.method, self.seed = model, method, seed
        self.every = check_positive_int(every, "valid_every")
        self.ais_runs, self.ais_betas, self.max_frames = ais_runs, ais_betas, max_frames
        self.calls = 0
        self.estimator = ""

    def _subset(self, rolls: Sequence[Any]) -> list[Any]:
        if self.max_frames is None:
            return list(rolls)
        out, n = [], 0
        for r in rolls:
            if out and n + len(r) > self.max_frames:
                break
            out.append(r)
            n += len(r)
        return out

    def __call__(self, valid: Sequence[Any]) -> dict[str, float]:
        self.calls += 1
        if self.calls % self.every:
            return {}
        report = sequence_nll(
            self.model,
            self._subset(valid),
            method=self.method,
            ais_runs=self.ais_runs,
            ais_betas=self.ais_betas,
            seed=self.seed,
            split="valid",
        )
        self.estimator = report.estimator
        return {"valid_nll": report.nll}


# ----------------------------------------------------------------------------- stages
def _stage_config(
    epochs: int,
    batch_size: int,
    lr: float,
    optimizer: str,
    seed: int,
    progress: bool,
    **more: Any,
) -> TrainConfig:
    """The ``TrainConfig`` of one stage: the settings every stage takes, plus ``more`` fields."""
    return TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        seed=seed,
        progress=progress,
        **more,
    )


def sequence_epochs(
    model: SequenceModel,
    rolls: Sequence[Any],
    batch_size: int,
    seed: int,
    max_len: int | None,
    carry_state: bool = False,
) -> SequenceEpochs:
    """``fit`` data of length-sorted sequence batches of ``rolls`` on the model's device; a
    streamed corpus split (``data.streaming.CorpusSplit``) gets shard-local epochs
    (``StreamingBatches``: windows of its shards, one window in memory)."""
    device = next(model.parameters()).device
    if isinstance(rolls, CorpusSplit):
        return SequenceEpochs(
            StreamingBatches(
                rolls,
                batch_size,
                seed=seed,
                max_len=max_len,
                carry_state=carry_state,
                device=device,
            )
        )
    return SequenceEpochs(
        SequenceBatches(
            rolls,
            batch_size,
            seed=seed,
            max_len=max_len,
            sort_by_length=True,
            carry_state=carry_state,
            device=device,
        )
    )


def pretrain_frames(
    model: SequenceModel,
    frames: Any,
    *,
    epochs: int,
    batch_size: int = 100,
    lr: float = 1e-3,
    optimizer: str = "adam",
    k: int | None = None,
    seed: int = 0,
    callbacks: Sequence[Callback] = (),
    progress: bool = False,
) -> TrainResult:
    """Stage 1: train ``model.estimator`` on independent frames ``(N, n_v)`` in place.

    ``k`` overrides the RBM frame's CD-k for this stage only (pretraining a plain RBM needs
    fewer Gibbs steps than the sequence stage; ignored for NADE frames)."""
    p = next(model.parameters())
    x = torch.as_tensor(frames).to(device=p.device, dtype=p.dtype)
    config = _stage_config(epochs, batch_size, lr, optimizer, seed, progress)
    rows = RowBatches(x, batch_size, seed=seed)
    est = model.estimator
    saved_k = getattr(est, "k", None)
    if k is not None and saved_k is not None:
        est.k = check_positive_int(k, "pretrain_k")  # type: ignore[attr-defined]
    try:
        return fit(FramePretraining(model), rows, None, config, callbacks)
    finally:
        if saved_k is not None:
            est.k = saved_k  # type: ignore[attr-defined]


def pretrain_recurrence(
    model: SequenceModel,
    rolls: Sequence[Any],
    *,
    epochs: int,
    batch_size: int = 16,
    lr: float = 1e-3,
    optimizer: str = "adam",
    max_len: int | None = None,
    carry_state: bool = False,
    clip_grad_norm: float | None = None,
    seed: int = 0,
    callbacks: Sequence[Callback] = (),
    progress: bool = False,
) -> TrainResult:
    """Stage 2: train ``model.recurrence`` on the per-note cross-entropy in place."""
    batches = sequence_epochs(model, rolls, batch_size, seed, max_len, carry_state)
    config = _stage_config(
        epochs, batch_size, lr, optimizer, seed, progress, clip_grad_norm=clip_grad_norm
    )
    return fit(RecurrencePretraining(model), batches, None, config, callbacks)
