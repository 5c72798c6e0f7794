"""The shared loop: resume equals uninterrupted, NaN stops with a named parameter, options."""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from rnnrbm import RBM, GaussianBernoulliRBM
from rnnrbm.checkpoint import load_checkpoint
from rnnrbm.registry import register_model
from rnnrbm.training import (
    Callback,
    RowBatches,
    TrainConfig,
    build_optimizer,
    fit,
    scheduled_lr,
)
from rnnrbm.validation import InputError, NonFiniteError


def _data(n: int = 64, d: int = 10, seed: int = 0) -> torch.Tensor:
    return (torch.rand(n, d, generator=torch.Generator().manual_seed(seed)) < 0.3).float()


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(("optimizer", "method"), [("sgd", "pcd"), ("adam", "pcd"), ("sgd", "cd")])
def test_resume_equals_uninterrupted(tmp_path: Path, optimizer: str, method: str) -> None:
    data, valid = _data(), _data(16, seed=1)
    kwargs = dict(epochs=3, batch_size=10, lr=0.05, optimizer=optimizer, seed=7)
    full = RBM(10, 6, k=2, method=method, n_chains=13, seed=5)
    full.fit(data, valid=valid, momentum=0.5 if optimizer == "sgd" else 0.0, **kwargs)

    part = RBM(10, 6, k=2, method=method, n_chains=13, seed=5)
    part.fit(
        data,
        valid=valid,
        momentum=0.5 if optimizer == "sgd" else 0.0,
        checkpoint_dir=tmp_path,
        max_steps=11,  # stops mid-epoch 2 (7 batches per epoch)
        **kwargs,
    )
    assert part.fit_result_.state.step == 11 and part.fit_result_.state.batch == 4
    resumed = RBM.load(tmp_path / "last.safetensors")
    resumed.fit(
        data,
        valid=valid,
        momentum=0.5 if optimizer == "sgd" else 0.0,
        resume=tmp_path / "last.safetensors",
        **kwargs,
    )
    a, b = _params(full), _params(resumed)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert full.fit_result_.history == resumed.fit_result_.history


def test_checkpoints_every_epoch_and_best(tmp_path: Path) -> None:
    rbm = RBM(10, 4, seed=0)
    rbm.fit(
        _data(),
        valid=_data(16, seed=1),
        epochs=2,
        batch_size=16,
        checkpoint_dir=tmp_path,
        monitor="recon_xent",
    )
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["best.safetensors", "last.safetensors"]
    state = load_checkpoint(tmp_path / "last.safetensors").train_state
    assert state is not None and state["epoch"] == 2 and len(state["history"]) == 2
    assert {"train_loss", "recon_xent", "neg_pseudo_loglik", "free_energy_gap"} <= set(
        state["history"][0]
    )


def test_early_stopping_on_validation_metric() -> None:
    rbm = RBM(10, 4, seed=0)
    calls: list[int] = []

    class Count(Callback):
        def on_epoch_end(self, state, metrics):  # type: ignore[no-untyped-def]
            calls.append(state.epoch)

    # with a negligible lr the monitored gap cannot keep improving: patience 1 stops the run
    rbm.fit(
        _data(),
        valid=_data(16, seed=1),
        epochs=50,
        lr=1e-9,
        monitor="free_energy_gap",
        patience=1,
        callbacks=(Count(),),
    )
    assert rbm.fit_result_.state.stopped_early
    assert len(calls) < 50


class _NoConfig(nn.Module):
    """A test model with nothing to configure: checkpoints rebuild it with ``cls()``."""

    def config(self) -> dict[str, float]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, float]) -> _NoConfig:
        return cls()


class _Scalar(_NoConfig):
    """One scalar parameter ``w``, starting at ``START``; subclasses give the loss."""

    START = 0.0

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(self.START))


@register_model("test-log-model")
class _LogModel(_Scalar):
    """loss = √w: SGD with lr 3 from w = 1 drives w to −0.5, so step 2 has a NaN gradient."""

    model_type = "test-log-model"
    START = 1.0

    def loss(self, batch, *, generator=None):  # type: ignore[no-untyped-def]
        return torch.sqrt(self.w), {}


def test_nan_stops_with_parameter_and_step_and_keeps_last_checkpoint(tmp_path: Path) -> None:
    model = _LogModel()
    train = RowBatches(torch.zeros(1, 1), 1)
    config = TrainConfig(epochs=5, lr=3.0, checkpoint_dir=str(tmp_path))
    with pytest.raises(
        NonFiniteError, match=r"training step 2.*gradient of parameter 'w'.*last good checkpoint"
    ):
        fit(model, train, None, config)
    ck = load_checkpoint(tmp_path / "last.safetensors")
    assert ck.train_state is not None and ck.train_state["epoch"] == 1
    assert torch.isfinite(ck.model.w)
    assert model.w.item() == pytest.approx(-0.5)  # the bad step was not applied


def test_gaussian_rbm_divergence_is_caught() -> None:
    x = torch.randn(50, 5, generator=torch.Generator().manual_seed(0)) * 100
    with pytest.raises(NonFiniteError, match="training step"):
        GaussianBernoulliRBM(5, 3, seed=0).fit(x, epochs=200, batch_size=50, lr=1e12)


def test_unknown_optimizer_is_a_clear_error() -> None:
    with pytest.raises(
        InputError, match=r"optimizer: expected a torch.optim.*'sgd'.*got 'adamax2'"
    ):
        RBM(10, 4).fit(_data(), epochs=1, optimizer="adamax2")


@pytest.mark.parametrize("name", ["adam", "adamw", "rmsprop", "adagrad"])
def test_any_torch_optimizer_by_name(name: str) -> None:
    rbm = RBM(10, 4).fit(_data(), epochs=1, optimizer=name, lr=1e-3)
    assert rbm.fit_result_.state.step == 1


def test_weight_decay_touches_weights_only() -> None:
    model = RBM(10, 4, seed=0)
    opt = build_optimizer(model, TrainConfig(weight_decay=0.5))
    decays = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decays[id(model.frame.W)] == 0.5
    assert decays[id(model.frame.b_v)] == 0.0 and decays[id(model.frame.b_h)] == 0.0


def test_progress_callback_receives_every_step() -> None:
    seen: list[float] = []

    class Rec(Callback):
        def on_step(self, state, loss, monitors):  # type: ignore[no-untyped-def]
            seen.append(loss)

    RBM(10, 4).fit(_data(), epochs=2, batch_size=32, callbacks=(Rec(),))
    assert len(seen) == 4


def test_clip_grad_norm_bounds_the_update() -> None:
    model = _LogModel()
    config = TrainConfig(epochs=1, lr=1.0, clip_grad_norm=0.1)
    fit(model, RowBatches(torch.zeros(1, 1), 1), None, config)
    assert model.w.item() == pytest.approx(0.9)


@pytest.fixture
def default_sigint():
    """Python's own SIGINT handler for the test (pytest may run as a background job, which
    starts with SIGINT ignored), the previous one restored afterwards."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


class _SigintAfterUpdate(torch.optim.SGD):
    """SGD that sends itself SIGINT right after updating the weights of step ``at``: the worst
    moment (weights changed, step not yet counted)."""

    def __init__(self, params, at: int, **kw) -> None:
        super().__init__(params, **kw)
        self.at, self.calls = at, 0

    def step(self, closure=None):  # type: ignore[override]
        out = super().step(closure)
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return out


def test_ctrl_c_after_an_update_still_resumes_exactly(tmp_path: Path, default_sigint: None) -> None:
    """SIGINT lands between ``optimizer.step()`` and the loop's bookkeeping: ``fit`` finishes
    the step, writes ``last`` and raises KeyboardInterrupt; resuming equals never stopping."""
    data = _data()
    config = TrainConfig(epochs=2, batch_size=10, lr=0.05, momentum=0.5, seed=3)

    def model() -> RBM:
        return RBM(10, 6, k=1, method="pcd", n_chains=7, seed=5)

    def sgd(rbm: RBM, at: int) -> torch.optim.SGD:
        return _SigintAfterUpdate(rbm.parameters(), at, lr=0.05, momentum=0.5)

    full = model()
    fit(full, RowBatches(data, 10, seed=3), config=config, optimizer=sgd(full, at=0))
    part = model()
    ckpt = replace(config, checkpoint_dir=str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        fit(part, RowBatches(data, 10, seed=3), config=ckpt, optimizer=sgd(part, at=4))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    saved = load_checkpoint(tmp_path / "last.safetensors").train_state
    assert saved is not None and saved["step"] == 4 and saved["interrupted"]
    resumed = model()
    opt = sgd(resumed, at=0)
    fit(
        resumed,
        RowBatches(data, 10, seed=3),
        config=config,
        optimizer=opt,
        resume=tmp_path / "last.safetensors",
    )
    a, b = _params(full), _params(resumed)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _textbook_fit(model: RBM, data: torch.Tensor, config: TrainConfig) -> list[float]:
    """The loop as torch's tutorials write it (``zero_grad``, ``backward``, ``clip_grad_norm_``,
    ``optimizer.step()``), seeded as ``fit`` seeds it; returns the per-step losses."""
    batches = RowBatches(data, config.batch_size, seed=config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = build_optimizer(model, config)
    model.on_fit_start(batches, resumed=False)
    losses = []
    for epoch in range(config.epochs):
        for batch in batches.epoch(epoch):
            loss, _ = model.loss(batch, generator=generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
            optimizer.step()
            losses.append(loss.item())
    return losses


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"momentum": 0.9, "weight_decay": 0.01},
        {"momentum": 0.5, "nesterov": True, "clip_grad_norm": 0.05},
        {"optimizer": "adam", "clip_grad_norm": 0.05, "lr": 0.01},
    ],
    ids=["sgd", "momentum-decay", "nesterov-clip", "adam-clip"],
)
def test_fit_equals_the_textbook_loop_bitwise(options: dict) -> None:
    """The lean step (one gradient norm for the NaN check and the clip, parameters collected
    once) changes no float: weights and every step's loss equal torch's own loop exactly."""
    data = _data(50, 10)
    config = TrainConfig(**{"epochs": 2, "batch_size": 8, "lr": 0.1, "seed": 4, **options})
    losses: list[float] = []

    class Losses(Callback):
        def on_step(self, state, loss, monitors):  # type: ignore[no-untyped-def]
            losses.append(float(loss))

    ours = RBM(10, 6, k=1, method="pcd", n_chains=7, seed=2)
    fit(ours, RowBatches(data, 8, seed=4), None, config, (Losses(),))
    reference = RBM(10, 6, k=1, method="pcd", n_chains=7, seed=2)
    assert losses == _textbook_fit(reference, data, config)
    a, b = _params(ours), _params(reference)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["frame.W"], _params(RBM(10, 6, seed=2))["frame.W"])  # it trained


def test_infinite_gradient_with_finite_loss_stops_before_the_update() -> None:
    """√w at w = 0: the loss is 0 but the gradient is +inf; only the gradient norm catches it."""
    model = _LogModel()
    with torch.no_grad():
        model.w.zero_()
    with pytest.raises(
        NonFiniteError, match=r"training step 1.*gradient of parameter 'w'.*loss=0\.0"
    ):
        fit(model, RowBatches(torch.zeros(1, 1), 1), None, TrainConfig(epochs=1, lr=0.1))
    assert model.w.item() == 0.0


@register_model("test-scripted-validation")
class _ScriptedValidation(_NoConfig):
    """A quadratic loss whose validation metric follows a script (one value per check)."""

    model_type = "test-scripted-validation"
    SCRIPT = (5.0, 4.0, 4.5, 4.6, 4.7, 3.0, 3.5, 3.6, 3.7, 3.8)

    def __init__(self, checks_done: int = 0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))
        self.checks_done = checks_done

    def loss(self, batch, *, generator=None):  # type: ignore[no-untyped-def]
        return (self.w - batch).pow(2).mean(), {}

    def validate(self, valid):  # type: ignore[no-untyped-def]
        self.checks_done += 1
        return {"valid_nll": self.SCRIPT[self.checks_done - 1]}


# lr 0.1, halved at every 2nd check in a row without a new best (checks 4, 8 and 10).
EXPECTED_LR = [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025, 0.0125]


def _plateau_config(**kw) -> TrainConfig:  # type: ignore[no-untyped-def]
    base = dict(epochs=10, lr=0.1, optimizer="sgd", monitor="valid_nll", lr_decay=0.5)
    return TrainConfig(**{**base, "lr_patience": 2, "batch_size": 4, **kw})


def test_plateau_lr_decay_follows_the_validation_metric(tmp_path: Path) -> None:
    data = torch.ones(8, 3)
    result = fit(_ScriptedValidation(), RowBatches(data, 4), "valid", _plateau_config())
    assert [h["lr"] for h in result.history] == pytest.approx(EXPECTED_LR)
    # Stopping still counts checks since the best: patience 3 ends the run after check 5.
    stopped = fit(_ScriptedValidation(), RowBatches(data, 4), "valid", _plateau_config(patience=3))
    assert stopped.state.stopped_early and len(stopped.history) == 5
    # The decayed lr is in the optimiser's state: a resumed run continues at it.
    fit(
        _ScriptedValidation(),
        RowBatches(data, 4),
        "valid",
        _plateau_config(checkpoint_dir=str(tmp_path), max_steps=9),  # mid check 5
    )
    resumed = fit(
        _ScriptedValidation(checks_done=4),
        RowBatches(data, 4),
        "valid",
        _plateau_config(),
        resume=tmp_path / "last.safetensors",
    )
    assert [h["lr"] for h in resumed.history] == pytest.approx(EXPECTED_LR)


@register_model("test-unit-slope")
class _UnitSlope(_Scalar):
    """loss = w: every SGD step moves w by exactly −lr, so w ends at −(sum of the step lrs)."""

    model_type = "test-unit-slope"

    def loss(self, batch, *, generator=None):  # type: ignore[no-untyped-def]
        return self.w * 1.0, {}


def test_scheduled_lr_falls_from_lr_to_lr_final_along_the_named_curve() -> None:
    cos = TrainConfig(lr=0.1, lr_schedule="cosine", lr_final=0.1)
    lin = replace(cos, lr_schedule="linear")
    # 21 steps: step 10 is halfway, step 5 a quarter; cos(π/4) = √2/2.
    assert scheduled_lr(cos, 0, 21) == pytest.approx(0.1)
    assert scheduled_lr(cos, 20, 21) == pytest.approx(0.01)
    assert scheduled_lr(cos, 10, 21) == pytest.approx(0.055)
    assert scheduled_lr(lin, 10, 21) == pytest.approx(0.055)
    assert scheduled_lr(cos, 5, 21) == pytest.approx(0.1 * (0.1 + 0.9 * (2 + 2**0.5) / 4))
    assert scheduled_lr(lin, 5, 21) == pytest.approx(0.0775)
    assert scheduled_lr(TrainConfig(lr=0.1), 20, 21) == 0.1


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_a_fixed_lr_schedule_sets_every_step_and_a_resumed_run_continues_it(
    tmp_path: Path, schedule: str
) -> None:
    data = torch.ones(8, 3)  # 2 batches per epoch, 10 epochs: 20 steps
    config = TrainConfig(
        epochs=10, lr=0.1, optimizer="sgd", batch_size=4, lr_schedule=schedule, lr_final=0.2
    )
    lrs = [scheduled_lr(config, s, 20) for s in range(20)]
    model = _UnitSlope()
    result = fit(model, RowBatches(data, 4), config=config)
    assert model.w.item() == pytest.approx(-sum(lrs), rel=1e-6)
    assert [h["lr"] for h in result.history] == pytest.approx(lrs[1::2])  # each epoch's last
    assert lrs[-1] == pytest.approx(0.02) and lrs[0] == pytest.approx(0.1)
    part = _UnitSlope()
    stopped = replace(config, checkpoint_dir=str(tmp_path), max_steps=7)  # mid-epoch 4
    fit(part, RowBatches(data, 4), config=stopped)
    resumed = _UnitSlope()
    fit(resumed, RowBatches(data, 4), config=config, resume=tmp_path / "last.safetensors")
    assert torch.equal(resumed.w, model.w)


def test_a_fixed_lr_schedule_and_plateau_decay_are_not_taken_together() -> None:
    with pytest.raises(InputError, match=r"^lr_decay: expected unset beside a fixed lr_schedule"):
        TrainConfig(lr_schedule="cosine", lr_decay=0.5)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lr_decay", 1.0),
        ("lr_decay", 0.0),
        ("lr_patience", 0),
        ("checkpoint_every", 0),
        ("batch_size", 0),
        ("lr", 0.0),
        ("patience", 0),
        ("clip_grad_norm", -1.0),
        ("weight_decay", -1e-4),
        ("max_steps", 0),
        ("lr_final", 1.5),
    ],
)
def test_train_config_rejects_bad_settings_when_built(field: str, value: float) -> None:
    with pytest.raises(InputError, match=rf"^{field}: expected .* Fix: "):
        _plateau_config(**{field: value})


def test_a_deferred_check_names_the_first_bad_step_and_saves_nothing(tmp_path: Path) -> None:
    """With ``sync_every=4`` (a GPU's batching of host syncs) step 2 turns NaN and the check at
    step 4 stops the run naming step 2; the corrupt weights are never written."""
    config = TrainConfig(epochs=1, lr=3.0, checkpoint_dir=str(tmp_path), sync_every=4)
    with pytest.raises(NonFiniteError, match=r"training step 2\b.*loss=nan"):
        fit(_LogModel(), RowBatches(torch.zeros(6, 1), 1), None, config)
    assert not list(tmp_path.iterdir())


class _Record(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_step(self, state, loss, monitors):  # type: ignore[no-untyped-def]
        self.losses.append(float(loss))


def test_batched_host_syncs_change_no_float() -> None:
    """Syncing every 7 steps instead of every step gives the same weights, step losses and
    epoch losses, bit for bit."""
    data = _data(50, 10)
    runs = []
    for every in (1, 7):
        rec = _Record()
        model = RBM(10, 6, k=1, method="pcd", n_chains=7, seed=2)
        config = TrainConfig(epochs=3, batch_size=8, lr=0.1, optimizer="adam", sync_every=every)
        result = fit(model, RowBatches(data, 8, seed=4), None, config, (rec,))
        runs.append((_params(model), rec.losses, [h["train_loss"] for h in result.history]))
    (a, la, ha), (b, lb, hb) = runs
    assert la == lb and ha == hb
    assert all(torch.equal(a[k], b[k]) for k in a)


_CONVERSIONS = ("item", "tolist", "__float__", "__int__", "__bool__")


def test_the_training_step_never_waits_for_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counts every conversion of a floating-point tensor to a Python value (a host sync when
    the tensor is on a GPU) while an RNN-RBM trains on padded batches: the loop, the recurrence,
    the CD chain and the clip make none per step, only one per host sync (``sync_every``).

    Not counted, because they live on the host whatever the model's device: the batches' masks
    (bool) and item indices (int64) from ``data.batching``, and Adam's step counter, which
    ``torch.optim`` keeps on the CPU (unless ``capturable``) and reads with ``.item()``."""
    import inspect

    from rnnrbm.data.batching import SequenceBatches
    from rnnrbm.models.sequence import SequenceEpochs, build_sequence_model

    g = torch.Generator().manual_seed(0)
    rolls = [(torch.rand(n, 12, generator=g) < 0.3).float() for n in (5, 9, 7, 4, 8, 6, 3, 9)]
    counts = {"value": 0}

    def counting(name: str):  # type: ignore[no-untyped-def]
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            caller = inspect.stack(0)[1].filename
            if self.is_floating_point() and f"torch{os.sep}optim" not in caller:
                counts["value"] += 1
            return original(self, *args, **kwargs)

        return wrapper

    def steps_and_conversions(epochs: int) -> tuple[int, int]:
        model = build_sequence_model("rnn-rbm", n_visible=12, n_hidden=6, n_recurrent=5, k=3)
        batches = SequenceEpochs(SequenceBatches(rolls, 2, seed=1, sort_by_length=True))
        config = TrainConfig(epochs=epochs, lr=1e-2, optimizer="adam", clip_grad_norm=1.0)
        config = replace(config, sync_every=1000)
        with monkeypatch.context() as m:
            for name in _CONVERSIONS:
                m.setattr(torch.Tensor, name, counting(name))
            counts["value"] = 0
            result = fit(model, batches, None, config)
        return result.state.step, counts["value"]

    steps_1, conversions_1 = steps_and_conversions(1)
    steps_3, conversions_3 = steps_and_conversions(3)
    assert (steps_1, steps_3) == (4, 12)
    assert conversions_1 == 1 and conversions_3 == 3  # one flush per epoch
