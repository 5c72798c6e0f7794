"""The stages of a recipe and their callbacks: frame and recurrence pretraining, the validation
monitor, the time budget and the best weights (``rnnrbm.recipes.stages``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rnnrbm.data.batching import pad_sequences
from rnnrbm.models.sequence import build_sequence_model
from rnnrbm.recipes.stages import (
    BestWeights,
    RecurrencePretraining,
    TimeBudget,
    ValidationMonitor,
    pretrain_frames,
    pretrain_recurrence,
)
from rnnrbm.training import TrainConfig, TrainState
from rnnrbm.validation import InputTypeError
from toy_sequences import N_V, toy_dataset


def _options(**kw):  # type: ignore[no-untyped-def]
    return {"n_visible": N_V, "n_hidden": 6, "n_recurrent": 5, "init_std": 0.1, **kw}


def _state(model) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_frame_pretraining_trains_the_estimator_only_and_restores_k() -> None:
    model = build_sequence_model("rnn-rbm", k=7, **_options())
    before = _state(model)
    frames = toy_dataset().frames("train")
    pretrain_frames(model, frames, epochs=2, batch_size=10, lr=1e-2, k=1)
    after = _state(model)
    assert model.estimator.k == 7
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"estimator.W", "estimator.b_v", "estimator.b_h"}


def test_recurrence_pretraining_loss_and_scope() -> None:
    ds = toy_dataset()
    model = build_sequence_model("rnn-rbm", **_options(init_std=0.5, recurrent_init_std=0.5))
    batch = pad_sequences(ds["train"][:3])
    rolls, mask = batch
    with torch.no_grad():
        loss, _ = RecurrencePretraining(model).loss(batch)
        logits = model.estimator.b_v + model.offsets(batch)[0]
        manual = F.binary_cross_entropy_with_logits(logits, rolls, reduction="none").sum(-1)
    assert float(loss) == pytest.approx(float(manual[mask].mean()), rel=1e-6)
    names = {n for n, _ in RecurrencePretraining(model).named_parameters()}
    assert names and all(n.startswith("recurrence.") for n in names)

    before = _state(model)
    pretrain_recurrence(model, ds["train"], epochs=20, batch_size=4, lr=3e-2)
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("estimator."))
    with torch.no_grad():
        loss_after, _ = RecurrencePretraining(model).loss(batch)
    assert float(loss_after) < float(loss) - 1.0  # the shifted-roll structure is learnable


def test_validation_monitor_every_and_common_random_numbers() -> None:
    model = build_sequence_model("rnn-rbm", n_visible=N_V, n_hidden=20, n_recurrent=4)
    valid = toy_dataset()["valid"]
    mon = ValidationMonitor(model, every=2, method="ais", ais_runs=3, ais_betas=5, max_frames=10)
    assert mon(valid) == {}
    first = mon(valid)
    assert mon.estimator.startswith("ais(runs=3, betas=5")
    assert mon(valid) == {}
    assert mon(valid) == first  # the same AIS seed at every check
    assert len(mon._subset(valid)) < len(valid)
    with pytest.raises(InputTypeError, match="valid_every"):
        ValidationMonitor(model, every=1.5)  # type: ignore[arg-type]


def test_time_budget_and_best_weights_callbacks() -> None:
    budget = TimeBudget(None)
    state = TrainState(epoch=1)
    budget.on_fit_start(state, 1, TrainConfig())
    budget.on_epoch_end(state, {})
    assert not state.stopped_early and budget.log[0][0] == 1

    model = build_sequence_model("rnn-rbm", **_options())
    best = BestWeights(model)
    assert not best.restore()
    best.on_epoch_end(TrainState(epoch=2, best_epoch=2), {})
    saved = _state(model)
    with torch.no_grad():
        model.estimator.W.add_(1.0)
    best.on_epoch_end(TrainState(epoch=3, best_epoch=2), {})  # not an improvement: no copy
    assert best.restore() and best.epoch == 2
    assert torch.equal(model.estimator.W, saved["estimator.W"])


def test_time_budget_stops_after_the_epoch_that_would_overrun() -> None:
    budget = TimeBudget(1e-6)
    state = TrainState(epoch=1)
    budget.on_fit_start(state, 1, TrainConfig())
    budget.on_epoch_end(state, {})
    assert state.stopped_early and [e for e, _ in budget.log] == [1]
