"""Training recipes: the paper's stages through the one loop, monitors, budgets, best weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnrbm.data.batching import pad_sequences
from rnnrbm.data.polyphonic import PolyphonicDataset
from rnnrbm.models.sequence import RNNRBM, build_sequence_model
from rnnrbm.recipes import (
    BestWeights,
    RecurrencePretraining,
    TimeBudget,
    ValidationMonitor,
    pretrain_frames,
    pretrain_recurrence,
    train_sequence_model,
)
from rnnrbm.training import TrainConfig, TrainState
from rnnrbm.validation import InputError, InputTypeError

N_V = 12


def _dataset(seed: int = 0, n_v: int = N_V) -> PolyphonicDataset:
    """Sequences with structure: each frame is the previous one shifted by one key."""
    rng = np.random.default_rng(seed)

    def piece(T: int) -> np.ndarray:
        first = rng.random(n_v) < 0.3
        return np.stack([np.roll(first, t) for t in range(T)])

    splits = {
        "train": [piece(int(T)) for T in rng.integers(3, 9, 12)],
        "valid": [piece(int(T)) for T in rng.integers(3, 9, 4)],
    }
    return PolyphonicDataset("toy", "memory", splits)


def _options(**kw):  # type: ignore[no-untyped-def]
    return {"n_visible": N_V, "n_hidden": 6, "n_recurrent": 5, "init_std": 0.1, **kw}


def _state(model) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_recipe_runs_the_three_stages_and_logs_validation() -> None:
    ds = _dataset()
    model, result = train_sequence_model(
        "rnn-rbm", ds, epochs=3, batch_size=4, lr=1e-2, k=2, pretrain_epochs=1,
        rnn_pretrain_epochs=1, valid_every=1, patience=None, model_options=_options(),
    )  # fmt: skip
    assert isinstance(model, RNNRBM) and model.estimator.k == 2
    assert [h["epoch"] for h in result.history] == [1.0, 2.0, 3.0]
    assert all("valid_nll" in h and "train_loss" in h for h in result.history)
    # The monitor is removed afterwards: validate is the class's again and the model saves.
    assert "validate" not in vars(model)
    assert model.recipe_log_["valid_estimator"] == "exact"  # a 6-unit hidden layer
    assert model.recipe_log_["best_epoch"] == result.state.best_epoch


def test_recipe_is_seeded() -> None:
    ds = _dataset()
    kw = dict(epochs=2, batch_size=4, k=1, pretrain_epochs=1, model_options=_options(), seed=3)
    a, _ = train_sequence_model("rnn-rbm", ds, **kw)
    b, _ = train_sequence_model("rnn-rbm", ds, **kw)
    c, _ = train_sequence_model("rnn-rbm", ds, **{**kw, "seed": 4})
    assert all(
        torch.equal(x, y) for x, y in zip(_state(a).values(), _state(b).values(), strict=True)
    )
    assert not all(
        torch.equal(x, y) for x, y in zip(_state(a).values(), _state(c).values(), strict=True)
    )


def test_rnn_nade_recipe_improves_valid_nll() -> None:
    ds = _dataset()
    opts = {k: v for k, v in _options().items()}
    _, result = train_sequence_model(
        "rnn-nade", ds, epochs=15, batch_size=4, lr=2e-2, pretrain_epochs=2, patience=None,
        model_options=opts,
    )  # fmt: skip
    nll = [h["valid_nll"] for h in result.history]
    assert nll[-1] < nll[0] - 0.5


def test_frame_pretraining_trains_the_estimator_only_and_restores_k() -> None:
    model = build_sequence_model("rnn-rbm", k=7, **_options())
    before = _state(model)
    frames = _dataset().frames("train")
    pretrain_frames(model, frames, epochs=2, batch_size=10, lr=1e-2, k=1)
    after = _state(model)
    assert model.estimator.k == 7
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"estimator.W", "estimator.b_v", "estimator.b_h"}


def test_recurrence_pretraining_loss_and_scope() -> None:
    ds = _dataset()
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
    valid = _dataset()["valid"]
    mon = ValidationMonitor(model, every=2, method="ais", ais_runs=3, ais_betas=5, max_frames=10)
    assert mon(valid) == {}
    first = mon(valid)
    assert mon.estimator.startswith("ais(runs=3, betas=5")
    assert mon(valid) == {}
    assert mon(valid) == first  # the same AIS seed at every check
    assert len(mon._subset(valid)) < len(valid)
    with pytest.raises(InputTypeError, match="valid_every"):
        ValidationMonitor(model, every=1.5)  # type: ignore[arg-type]


def test_time_budget_stops_after_the_first_epoch() -> None:
    ds = _dataset()
    _, result = train_sequence_model(
        "rnn-rbm", ds, epochs=50, batch_size=4, k=1, pretrain_epochs=0, time_budget=1e-6,
        model_options=_options(),
    )  # fmt: skip
    assert result.state.epoch == 1 and result.state.stopped_early


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


def test_early_stopping_restores_the_best_epoch() -> None:
    # Validation pieces run backwards in time (each frame shifted down one key, not up): once
    # the model learns the training direction the validation NLL turns up, for any seed
    # (checked 0-3), rather than by luck of one random stream.
    train = _dataset()
    valid = [np.ascontiguousarray(p[::-1]) for p in train["valid"]]
    ds = PolyphonicDataset("toy", "memory", {"train": train["train"], "valid": valid})
    model, result = train_sequence_model(
        "rnn-rbm", ds, epochs=30, batch_size=4, lr=0.3, k=1, pretrain_epochs=0, patience=2,
        optimizer="sgd", model_options=_options(), clip_grad_norm=None,
    )  # fmt: skip
    hist = [h["valid_nll"] for h in result.history]
    best = int(np.argmin(hist))
    assert result.state.stopped_early and len(hist) < 30 and best < len(hist) - 1
    assert result.state.best_epoch == best + 1
    final = model.validate(pad_sequences(ds["valid"]))["nll_per_frame"]  # exact for 6 hidden units
    assert final == pytest.approx(hist[best], abs=1e-5)


def test_recipe_errors() -> None:
    ds = _dataset()
    with pytest.raises(InputTypeError, match="dataset: expected a PolyphonicDataset"):
        train_sequence_model("rnn-rbm", ds["train"])  # type: ignore[arg-type]
    model = build_sequence_model("rnn-rbm", **_options())
    with pytest.raises(InputError, match="k: expected None with a built model"):
        train_sequence_model(model, ds, k=3)
    with pytest.raises(InputError, match="time_budget"):
        train_sequence_model(model, ds, time_budget=0)
    with pytest.raises(InputError, match="sequence model name"):
        train_sequence_model("rnn-dbn", ds)


def test_recipe_weight_decay_shrinks_the_weight_matrices() -> None:
    def trained(decay: float) -> dict[str, torch.Tensor]:
        model, _ = train_sequence_model(
            "rnn-nade", _dataset(), epochs=2, batch_size=4, lr=0.1, optimizer="sgd",
            pretrain_epochs=0, patience=None, restore_best=False, weight_decay=decay,
            model_options=_options(),
        )  # fmt: skip
        return _state(model)

    plain, decayed = trained(0.0), trained(1.0)
    matrices = [k for k, v in plain.items() if v.dim() == 2]
    assert matrices and all(decayed[k].norm() < plain[k].norm() for k in matrices)
