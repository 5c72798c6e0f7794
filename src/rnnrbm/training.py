"""THE training loop, shared by every model (docs/design.md §3).

A model only has to provide ``loss(batch, *, generator) -> (scalar, monitors)`` and
``parameters()``; optionally ``validate(valid) -> dict[str, float]`` (lower is better for the
monitored metric) and ``on_fit_start(train)``. Data come as a :class:`Batches` object whose epoch
order is a pure function of ``(seed, epoch)``, so a run resumed from a checkpoint sees exactly the
batches, random numbers and optimiser state of the uninterrupted run.
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from rnnrbm.checkpoint import load_checkpoint, save_checkpoint
from rnnrbm.validation import (
    InputError,
    NonFiniteError,
    check_number,
    check_positive_int,
    error_message,
)

__all__ = [
    "Batches",
    "Callback",
    "ProgressBar",
    "RowBatches",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "build_optimizer",
    "fit",
]

OptimizerFactory = Callable[[list[dict[str, Any]]], torch.optim.Optimizer]


@dataclass
class TrainConfig:
    """Everything that shapes a run. Saved in checkpoints (as JSON) for ``--resume``."""

    epochs: int = 10
    batch_size: int = 100
    lr: float = 0.01
    optimizer: str = "sgd"  # "sgd" | "adam" | "adamw" | "rmsprop" | any torch.optim class name
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0  # L2 on weight matrices only (biases are not decayed)
    clip_grad_norm: float | None = None
    seed: int = 0
    checkpoint_dir: str | None = None
    checkpoint_every: int = 1  # epochs
    monitor: str | None = None  # validation metric for "best" and early stopping (lower is better)
    valid_every: int = 1  # validate after epochs valid_every, 2·valid_every, … (counted from 1)
    patience: int | None = None  # early stopping: epochs without improvement of `monitor`
    # On a plateau of `monitor`: every `lr_patience` checks without improvement multiply each
    # group's lr by `lr_decay` (None: constant lr). The lr lives in the optimiser's state, so a
    # resumed run continues at the decayed rate.
    lr_decay: float | None = None
    lr_patience: int = 2
    max_steps: int | None = None  # stop after this many optimiser steps (then checkpoint)
    progress: bool = False

    def __post_init__(self) -> None:
        check_positive_int(self.epochs, "epochs", minimum=0)
        check_positive_int(self.batch_size, "batch_size")
        check_number(self.lr, "lr", low=0.0, open_low=True)
        check_number(self.momentum, "momentum", low=0.0, high=1.0, open_high=True)
        check_number(self.weight_decay, "weight_decay", low=0.0)
        if self.clip_grad_norm is not None:
            check_number(self.clip_grad_norm, "clip_grad_norm", low=0.0, open_low=True)
        check_positive_int(self.checkpoint_every, "checkpoint_every")
        check_positive_int(self.valid_every, "valid_every")
        if self.patience is not None:
            check_positive_int(self.patience, "patience")
        if self.lr_decay is not None:
            check_number(
                self.lr_decay, "lr_decay", low=0.0, high=1.0, open_low=True, open_high=True
            )
        check_positive_int(self.lr_patience, "lr_patience")
        if self.max_steps is not None:
            check_positive_int(self.max_steps, "max_steps")


@dataclass
class TrainState:
    """Where a run is: epoch/batch to do next, global step, best metric, history."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    epoch_loss_sum: float = 0.0  # running train loss of the current epoch (survives resume)
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    interrupted: bool = False


@dataclass
class TrainResult:
    state: TrainState
    checkpoint: Path | None

    @property
    def history(self) -> list[dict[str, float]]:
        return self.state.history


class Batches(Protocol):
    """Data for :func:`fit`: ``epoch(e)`` yields the batches of epoch ``e`` deterministically."""

    def __len__(self) -> int: ...

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Any]: ...


class RowBatches:
    """Mini-batches of rows of a ``(N, n)`` tensor, reshuffled each epoch from ``(seed, epoch)``."""

    def __init__(self, data: Tensor, batch_size: int, *, seed: int = 0, shuffle: bool = True):
        self.data, self.batch_size, self.seed, self.shuffle = data, batch_size, seed, shuffle

    def __len__(self) -> int:
        return math.ceil(self.data.shape[0] / self.batch_size)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Tensor]:
        n = self.data.shape[0]
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=g).to(self.data.device)
        else:
            order = torch.arange(n, device=self.data.device)
        for b in range(start, len(self)):
            yield self.data[order[b * self.batch_size : (b + 1) * self.batch_size]]


class Callback:
    """Hooks called by :func:`fit`; override what you need."""

    def on_fit_start(self, state: TrainState, n_batches: int, config: TrainConfig) -> None: ...

    def on_step(self, state: TrainState, loss: float, monitors: dict[str, float]) -> None: ...

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None: ...

    def on_fit_end(self, state: TrainState) -> None: ...


class ProgressBar(Callback):
    """A tqdm bar per epoch showing the running loss and the last validation figure."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._last: dict[str, float] = {}

    def on_fit_start(self, state: TrainState, n_batches: int, config: TrainConfig) -> None:
        from tqdm.auto import tqdm

        self._tqdm, self._n, self._epochs = tqdm, n_batches, config.epochs

    def on_step(self, state: TrainState, loss: float, monitors: dict[str, float]) -> None:
        if self._bar is None:
            self._bar = self._tqdm(
                total=self._n,
                initial=state.batch - 1,
                desc=f"epoch {state.epoch + 1}/{self._epochs}",
                leave=False,
                dynamic_ncols=True,
                mininterval=0.5,
                disable=None,  # no bar when stderr is not a terminal (CI logs)
            )
        self._bar.update(1)
        self._bar.set_postfix(loss=f"{loss:.4g}", **{k: f"{v:.4g}" for k, v in self._last.items()})

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._last = {k: v for k, v in metrics.items() if k != "epoch"}
        shown = "  ".join(f"{k}={v:.4g}" for k, v in self._last.items())
        self._tqdm.write(f"epoch {state.epoch}/{self._epochs}  {shown}")

    def on_fit_end(self, state: TrainState) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only (Hinton 2010 §10: biases are not penalised)."""
    trained = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trained if p.dim() >= 2]
    rest = [p for p in trained if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Any ``torch.optim`` optimiser by name, with momentum/Nesterov for SGD."""
    name = config.optimizer.lower()
    groups = _param_groups(model, config.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov
        )
    classes = {c.lower(): getattr(torch.optim, c) for c in dir(torch.optim)}
    cls = classes.get(name)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, torch.optim.Optimizer):
        raise InputError(
            error_message(
                "optimizer",
                "a torch.optim optimiser name such as 'sgd', 'adam', 'adamw', 'rmsprop'",
                repr(config.optimizer),
                "pick one of those",
            )
        )
    return cls(groups, lr=config.lr)


def _non_finite(
    model: nn.Module, loss_value: float, step: int, last_checkpoint: Path | None
) -> NonFiniteError:
    """The error for a non-finite loss or gradient norm, naming the first bad parameter."""
    culprit = "the loss"
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            culprit = f"parameter {name!r} (its values)"
            break
        if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
            culprit = f"the gradient of parameter {name!r}"
            break
    kept = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint"
    return NonFiniteError(
        error_message(
            f"training step {step}",
            "finite values",
            f"NaN/Inf in {culprit} (loss={loss_value})",
            f"lower the learning rate or clip gradients (clip_grad_norm); {kept}",
        )
    )


def _rng_states(generator: torch.Generator) -> dict[str, Tensor]:
    return {"sampler": generator.get_state()}


class _StepBoundaryInterrupt:
    """Ctrl-C during ``fit`` takes effect at the next step boundary, so the checkpoint written
    on interruption resumes exactly.

    A signal can land anywhere, e.g. between the optimiser's update of one tensor and the next,
    or after ``optimizer.step()`` but before the step is counted. The first SIGINT is only
    recorded and raised as ``KeyboardInterrupt`` by :meth:`check` where weights, optimiser state
    and position agree; a second one raises at once (``forced``: nothing is saved then, the last
    consistent checkpoint stays). Installed only from the main thread and only over Python's
    default handler: a caller's own SIGINT handler (e.g. the CLI's) is left in charge.
    """

    def __init__(self) -> None:
        self.requested = self.forced = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            self.forced = True
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def install(self) -> None:
        main = threading.current_thread() is threading.main_thread()
        if main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handler)

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def fit(
    model: nn.Module,
    train: Batches,
    valid: Any = None,
    config: TrainConfig | None = None,
    callbacks: Sequence[Callback] = (),
    *,
    resume: str | Path | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    validate: Callable[[Any], dict[str, float]] | None = None,
    checkpoint_meta: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` on ``train``; resumable; checkpoints each epoch, on Ctrl-C and at the end.

    ``resume`` is a checkpoint written by this function: model weights, optimiser state, the
    sampling generator and the position in the epoch are restored, so the continued run equals
    the uninterrupted one exactly (seeded, same device).

    Each step is ``loss.backward()``, one gradient norm (the non-finite check, reused by the
    clip) and ``optimizer.step()``. The parameters are collected once, after the
    ``on_fit_start`` hooks.

    ``validate(valid) -> metrics`` runs after each epoch when ``valid`` is given (default: the
    model's own ``validate``). ``checkpoint_meta`` (JSON-able: e.g. the run's recipe and data
    framing) is written into every checkpoint's header.
    """
    config = config or TrainConfig()
    if validate is None:
        validate = getattr(model, "validate", None)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(config.seed)
    optimizer = optimizer or build_optimizer(model, config)
    state = TrainState()
    ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    last_path: Path | None = None
    if resume is not None:
        state = _resume(resume, model, optimizer, generator) or state
        last_path = Path(resume)
    callbacks = list(callbacks) + ([ProgressBar()] if config.progress else [])

    def save(name: str) -> Path | None:
        return _save(ckpt_dir, name, model, optimizer, generator, state, config, checkpoint_meta)

    hook = getattr(model, "on_fit_start", None)
    if hook is not None:
        hook(train, resumed=resume is not None)
    for cb in callbacks:
        cb.on_fit_start(state, len(train), config)
    model.train()
    # Collected once, after the hooks: a per-step walk over the module tree costs ~10 µs.
    params = list(model.parameters())
    interrupt = _StepBoundaryInterrupt()
    interrupt.install()
    try:
        while state.epoch < config.epochs and not state.stopped_early:
            for batch in train.epoch(state.epoch, state.batch):
                loss, monitors = model.loss(batch, generator=generator)  # type: ignore[operator]
                value = _update(model, loss, params, optimizer, config, state.step + 1, last_path)
                state.step += 1
                state.batch += 1
                state.epoch_loss_sum += value
                for cb in callbacks:
                    cb.on_step(state, value, {k: float(v) for k, v in monitors.items()})
                interrupt.check()
                if config.max_steps is not None and state.step >= config.max_steps:
                    last_path = save("last") or last_path
                    return TrainResult(state, last_path)
            metrics = {"epoch": float(state.epoch + 1)}
            if state.batch:
                metrics["train_loss"] = state.epoch_loss_sum / state.batch
            # By epoch number, not by call count: a resumed run checks the same epochs.
            due = (state.epoch + 1) % config.valid_every == 0
            if valid is not None and validate is not None and due:
                model.eval()
                metrics.update(validate(valid))
                model.train()
            state.epoch += 1
            state.batch = 0
            state.epoch_loss_sum = 0.0
            state.history.append(metrics)
            improved = _track_best(state, metrics, config)
            _decay_on_plateau(optimizer, state, metrics, config, improved)
            if ckpt_dir is not None and (
                state.epoch % config.checkpoint_every == 0 or state.epoch == config.epochs
            ):
                last_path = save("last")
            if improved:
                save("best")
            for cb in callbacks:
                cb.on_epoch_end(state, metrics)
            interrupt.check()
    except KeyboardInterrupt:
        state.interrupted = True
        if not interrupt.forced:  # raised at a step boundary: weights and position agree
            last_path = save("last") or last_path
        for cb in callbacks:
            cb.on_fit_end(state)
        raise
    finally:
        interrupt.restore()
    last_path = save("last") or last_path
    for cb in callbacks:
        cb.on_fit_end(state)
    return TrainResult(state, last_path)


def _save(
    folder: Path | None,
    name: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    state: TrainState,
    config: TrainConfig,
    meta: dict[str, Any] | None,
) -> Path | None:
    """Write ``folder/name.safetensors`` with everything a resume needs (None: no folder)."""
    if folder is None:
        return None
    return save_checkpoint(
        folder / f"{name}.safetensors",
        model,
        optimizer=optimizer,
        rng_states=_rng_states(generator),
        train_state=asdict(state),
        train_config=asdict(config),
        meta=meta,
    )


def _resume(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> TrainState | None:
    """Load weights, optimiser state and the sampler's state from ``path``; its TrainState."""
    ck = load_checkpoint(path)
    model.load_state_dict(ck.model.state_dict())
    if ck.optimizer_state is not None:
        optimizer.load_state_dict(ck.optimizer_state)
    if "sampler" in ck.rng_states:
        generator.set_state(ck.rng_states["sampler"].to(generator.get_state().device))
    if not ck.train_state:
        return None
    state = TrainState(**ck.train_state)
    state.interrupted = state.stopped_early = False
    return state


def _update(
    model: nn.Module,
    loss: Tensor,
    params: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    step: int,
    last_path: Path | None,
) -> float:
    """One optimiser step from ``loss``; returns its value (checked finite first)."""
    for p in params:  # zero_grad(set_to_none=True) without its per-call profiler scope
        p.grad = None
    loss.backward()
    # Stop before a non-finite update: the loss and the gradient norm (which a clip reuses)
    # are the only host syncs of a step.
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads) if grads else None
    value = loss.item()
    if not (math.isfinite(value) and (norm is None or math.isfinite(norm.item()))):
        raise _non_finite(model, value, step, last_path)
    if config.clip_grad_norm is not None and norm is not None:
        torch.nn.utils.clip_grads_with_norm_(params, config.clip_grad_norm, norm)
    optimizer.step()
    return value


def _decay_on_plateau(
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    metrics: dict[str, float],
    config: TrainConfig,
    improved: bool,
) -> None:
    """Multiply every group's lr by ``lr_decay`` on a plateau; report the lr in ``metrics``."""
    if _plateau(state, metrics, config, improved):
        for group in optimizer.param_groups:
            group["lr"] *= config.lr_decay  # type: ignore[operator]
    if config.lr_decay is not None:
        metrics["lr"] = float(optimizer.param_groups[0]["lr"])


def _plateau(
    state: TrainState, metrics: dict[str, float], config: TrainConfig, improved: bool
) -> bool:
    """True every ``lr_patience``-th check in a row without improvement (decay the lr now)."""
    checked = config.monitor is not None and config.monitor in metrics
    return (
        config.lr_decay is not None
        and checked
        and not improved
        and state.bad_epochs % config.lr_patience == 0
    )


def _track_best(state: TrainState, metrics: dict[str, float], config: TrainConfig) -> bool:
    if config.monitor is None or config.monitor not in metrics:
        return False
    value = metrics[config.monitor]
    if state.best is None or value < state.best:
        state.best, state.best_epoch, state.bad_epochs = value, state.epoch, 0
        return True
    state.bad_epochs += 1
    if config.patience is not None and state.bad_epochs >= config.patience:
        state.stopped_early = True
    return False
