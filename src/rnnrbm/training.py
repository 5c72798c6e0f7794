"""THE training loop, shared by every model (docs/design.md §3).

A model only has to provide ``loss(batch, *, generator) -> (scalar, monitors)`` and
``parameters()``; optionally ``validate(valid) -> dict[str, float]`` (lower is better for the
monitored metric) and ``on_fit_start(train)``. Data come as a :class:`Batches` object whose epoch
order is a pure function of ``(seed, epoch)``, so a run resumed from a checkpoint sees exactly the
batches, random numbers and optimiser state of the uninterrupted run.

Under ``torchrun`` (a process group of N > 1 ranks, ``rnnrbm.distributed``) the same loop trains
data-parallel: each rank takes every N-th batch of the epoch, the gradients are averaged by one
all-reduce per step, rank 0's validation figures decide and rank 0 writes the checkpoints
(docs/design.md §11). In one process none of that code runs.
"""

from __future__ import annotations

import itertools
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from rnnrbm import distributed
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
    "scheduled_lr",
]

LR_SCHEDULES = ("constant", "cosine", "linear")

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
    # A fixed schedule instead (no validation needed, so a seeded run repeats): the lr of step
    # s of S = epochs · batches per epoch falls from `lr` to `lr · lr_final`, along a half
    # cosine (Loshchilov & Hutter 2017, eq. 5, one cycle) or a straight line.
    lr_schedule: str = "constant"  # "constant" | "cosine" | "linear"
    lr_final: float = 0.0
    max_steps: int | None = None  # stop after this many optimiser steps (then checkpoint)
    progress: bool = False
    # Steps between the loop's host syncs (the non-finite check, the loss sum): None is 1 on
    # the CPU, where a sync waits for nothing, and 32 on a GPU, where each one drains the queue.
    sync_every: int | None = None

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
        if self.lr_schedule not in LR_SCHEDULES:
            raise InputError(
                error_message(
                    "lr_schedule",
                    "one of " + ", ".join(map(repr, LR_SCHEDULES)),
                    repr(self.lr_schedule),
                    "pick one of those",
                )
            )
        check_number(self.lr_final, "lr_final", low=0.0, high=1.0)
        if self.lr_schedule != "constant" and self.lr_decay is not None:
            raise InputError(
                error_message(
                    "lr_decay",
                    "unset beside a fixed lr_schedule (both would set the lr)",
                    repr(self.lr_decay),
                    "drop lr_decay or set lr_schedule='constant'",
                )
            )
        if self.max_steps is not None:
            check_positive_int(self.max_steps, "max_steps")
        if self.sync_every is not None:
            check_positive_int(self.sync_every, "sync_every")


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
    """Data for :func:`fit`: ``epoch(e)`` yields the batches of epoch ``e`` deterministically.

    Optionally ``take(e, positions)`` yields only the batches at those positions of epoch ``e``
    (a data-parallel rank's share, without building the other ranks' batches)."""

    def __len__(self) -> int: ...

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Any]: ...


class RowBatches:
    """Mini-batches of rows of a ``(N, n)`` tensor, reshuffled each epoch from ``(seed, epoch)``."""

    def __init__(self, data: Tensor, batch_size: int, *, seed: int = 0, shuffle: bool = True):
        self.data, self.batch_size, self.seed, self.shuffle = data, batch_size, seed, shuffle

    def __len__(self) -> int:
        return math.ceil(self.data.shape[0] / self.batch_size)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Tensor]:
        return self.take(epoch, range(start, len(self)))

    def take(self, epoch: int, positions: Iterable[int]) -> Iterator[Tensor]:
        """The batches at ``positions`` (in that order) of epoch ``epoch``."""
        n = self.data.shape[0]
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=g).to(self.data.device)
        else:
            order = torch.arange(n, device=self.data.device)
        for b in positions:
            yield self.data[order[b * self.batch_size : (b + 1) * self.batch_size]]


class _Shard:
    """One rank's share of every epoch: batches ``rank, rank + N, rank + 2N, …`` of the global
    order (N ranks), the last ``len(batches) % N`` dropped.

    Every rank thus takes the same number of steps per epoch: a rank with one step more would
    wait forever in that step's all-reduce. The order stays a pure function of ``(seed,
    epoch)``, so the shards are disjoint and a resume replays them; ``start`` counts this
    rank's own steps.
    """

    def __init__(self, batches: Batches, rank: int, world: int) -> None:
        self.batches, self.rank, self.world = batches, rank, world

    def __len__(self) -> int:
        return len(self.batches) // self.world

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Any]:
        positions = range(self.rank + start * self.world, len(self) * self.world, self.world)
        take = getattr(self.batches, "take", None)
        if take is not None:
            return iter(take(epoch, positions))
        if not positions:
            return iter(())
        # Generic Batches: walk the epoch from our first batch and keep every N-th one.
        walk = self.batches.epoch(epoch, positions.start)
        return itertools.islice(walk, 0, len(positions) * self.world, self.world)


class Callback:
    """Hooks called by :func:`fit`; override what you need.

    ``on_step`` gets the step's loss and monitors as 0-dim tensors on the model's device, so the
    loop itself never waits for the device: converting one (``float(loss)``) is a host sync,
    which a callback should do sparingly on a GPU (the progress bar: at most twice a second).
    """

    def on_fit_start(self, state: TrainState, n_batches: int, config: TrainConfig) -> None: ...

    def on_step(self, state: TrainState, loss: Tensor, monitors: dict[str, Tensor]) -> None: ...

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None: ...

    def on_fit_end(self, state: TrainState) -> None: ...


class ProgressBar(Callback):
    """A tqdm bar per epoch showing the running loss and the last validation figure."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._last: dict[str, float] = {}
        self._shown = -math.inf  # monotonic time the loss was last shown

    def on_fit_start(self, state: TrainState, n_batches: int, config: TrainConfig) -> None:
        from tqdm.auto import tqdm

        self._tqdm, self._n, self._epochs = tqdm, n_batches, config.epochs

    def on_step(self, state: TrainState, loss: Tensor, monitors: dict[str, Tensor]) -> None:
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
        now = time.monotonic()
        if now - self._shown >= 0.5:  # float(loss) waits for the device: not every step
            self._shown = now
            last = {k: f"{v:.4g}" for k, v in self._last.items()}
            self._bar.set_postfix(loss=f"{float(loss):.4g}", **last)

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
    if name in ("adam", "adamw"):
        # The multi-tensor kernels: 395 µs against 509 µs per step for the RNN-RBM's 9 tensors
        # on one CPU thread, bit for bit the same update. (fused=True takes 145 µs but rounds
        # differently in the last bit, which would move every published seeded figure.)
        return cls(groups, lr=config.lr, foreach=True)
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

    Data-parallel (``synced``), a rank stops only where every rank stops: each step's all-reduce
    carries the ranks' requests and sets ``agreed``, which alone :meth:`check` reads there.
    """

    def __init__(self, synced: bool = False) -> None:
        self.requested = self.forced = False
        self.synced, self.agreed = synced, False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            self.forced = True
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.agreed if self.synced else self.requested:
            raise KeyboardInterrupt

    def install(self) -> None:
        main = threading.current_thread() is threading.main_thread()
        if main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handler)

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class _DataParallel:
    """What :func:`fit` does beyond the one-process loop when a process group of N > 1 ranks
    is active (docs/design.md §11).

    Gradients are averaged by hand rather than by ``DistributedDataParallel``: DDP hooks
    ``forward()``, but the objective here is ``model.loss(batch)``, a CD surrogate whose
    negative phase is sampled under ``no_grad`` outside any ``forward`` DDP could wrap. One
    explicit all-reduce of one flat buffer after ``backward()`` averages exactly the gradients
    the clip and the optimiser then read, whatever the model.
    """

    def __init__(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world

    @classmethod
    def from_env(cls) -> _DataParallel | None:
        """The active group's view, or None in one process (the loop is then unchanged)."""
        world = distributed.world_size()
        return cls(distributed.rank(), world) if world > 1 else None

    def shard(self, train: Batches) -> _Shard:
        shard = _Shard(train, self.rank, self.world)
        if len(shard) == 0:
            raise InputError(
                error_message(
                    "train",
                    f"at least {self.world} batches per epoch (one per process)",
                    f"{len(train)}",
                    "lower the batch size or launch fewer processes",
                )
            )
        return shard

    def seed(self, seed: int, step: int = 0) -> int:
        """This rank's sampling seed: rank 0 keeps ``seed`` (its stream is the one-process
        run's); rank r > 0 mixes ``(seed, r, step)`` so ranks never draw the same noise."""
        if self.rank == 0 and step == 0:
            return seed
        mixed = np.random.SeedSequence([seed, self.rank, step]).generate_state(1, np.uint64)[0]
        return int(mixed)

    def sync_parameters(self, params: list[nn.Parameter]) -> None:
        """Rank 0's parameters on every rank (identical seeds make them equal already; this
        makes it so whatever the initialisation did, e.g. on a GPU)."""
        with torch.no_grad():
            distributed.broadcast_([p.detach() for p in params])

    def average(
        self, params: list[nn.Parameter], loss: Tensor, interrupt: _StepBoundaryInterrupt
    ) -> float:
        """Average the gradients over the ranks in place; the loss averaged over the ranks.

        The one buffer also carries, per parameter, whether this rank produced its gradient
        (one that no rank produced stays None, as in one process) and this rank's Ctrl-C
        request, so every rank stops at the same step boundary.
        """
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flags = [float(p.grad is not None) for p in params] + [float(interrupt.requested)]
        extras = torch.cat(
            [loss.detach().reshape(1), torch.tensor(flags, dtype=loss.dtype, device=loss.device)]
        )
        distributed.all_reduce_sum_([*grads, extras])
        summed = extras.tolist()
        for p, g, produced in zip(params, grads, summed[1:-1], strict=True):
            p.grad = g.div_(self.world) if produced else None
        interrupt.agreed = summed[-1] > 0
        return summed[0] / self.world

    def agree(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank: decisions taken from rank-local facts (wall time,
        rank 0's validation) must be the same everywhere, or the ranks' steps fall apart."""
        return distributed.broadcast_object(value)

    def sampler_states(self, generator: torch.Generator, model: nn.Module) -> dict[str, Tensor]:
        """Every other rank's sampling state for rank 0's checkpoint: its generator
        (``rank{r}/sampler``) and the buffers where it differs from rank 0's (the persistent
        chains: ``rank{r}/buffer/<name>``), so a resume is exact on every rank. A collective."""
        mine = (generator.get_state(), {k: b.detach().cpu() for k, b in model.named_buffers()})
        gathered = distributed.all_gather_objects(mine)
        reference = gathered[0][1]
        out: dict[str, Tensor] = {}
        for r, (state, buffers) in enumerate(gathered[1:], start=1):
            out[f"rank{r}/sampler"] = state
            for name, b in buffers.items():
                if not torch.equal(b, reference[name]):
                    out[f"rank{r}/buffer/{name}"] = b
        return out

    def restore_sampler(
        self,
        rng_states: dict[str, Tensor],
        generator: torch.Generator,
        model: nn.Module,
        seed: int,
        step: int,
    ) -> None:
        """Rank r > 0 after loading rank 0's checkpoint: its own generator and buffers when
        the checkpoint has them (a run of as many ranks), else a generator re-derived from
        ``(seed, rank, step)`` and rank 0's buffers (deterministic, not the original stream)."""
        state = rng_states.get(f"rank{self.rank}/sampler")
        if state is None:
            generator.manual_seed(self.seed(seed, step))
        else:
            generator.set_state(state.to(generator.get_state().device))
        prefix = f"rank{self.rank}/buffer/"
        buffers = dict(model.named_buffers())
        with torch.no_grad():
            for key, value in rng_states.items():
                if key.startswith(prefix) and key[len(prefix) :] in buffers:
                    target = buffers[key[len(prefix) :]]
                    target.copy_(value.to(target.device))


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

    ``resume``: a checkpoint written here (weights, optimiser, sampler, position in the epoch),
    so the continued run equals the uninterrupted one exactly. A step is ``loss.backward()``,
    one gradient norm (the non-finite check, reused by the clip) and ``optimizer.step()``; the
    values reach the host every ``config.sync_every`` steps (:class:`_HostSync`).
    ``validate(valid) -> metrics`` (default: the model's own) runs on validation epochs;
    ``checkpoint_meta`` (JSON-able) goes into every checkpoint header.

    Under ``torchrun`` (N > 1 ranks; docs/design.md §11) every rank calls ``fit`` alike and
    trains on batches ``rank, rank + N, …`` of each epoch; rank 0's validation figures decide
    and rank 0 writes. Callbacks run on every rank, the bar on rank 0.
    """
    config = config or TrainConfig()
    if validate is None:
        validate = getattr(model, "validate", None)
    device = next(model.parameters()).device
    ddp = _DataParallel.from_env()
    seed = config.seed if ddp is None else ddp.seed(config.seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    optimizer = optimizer or build_optimizer(model, config)
    state = TrainState()
    ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    last_path: Path | None = None
    if resume is not None:
        state = _resume(resume, model, optimizer, generator, ddp, config.seed) or state
        last_path = Path(resume)
    batches = train if ddp is None else ddp.shard(train)
    bar = config.progress and distributed.is_main()
    callbacks = list(callbacks) + ([ProgressBar()] if bar else [])

    def save(name: str) -> Path | None:
        return _save(
            ckpt_dir, name, model, optimizer, generator, state, config, checkpoint_meta, ddp
        )

    hook = getattr(model, "on_fit_start", None)
    if hook is not None:  # the whole data (e.g. the RBM's base rates), not this rank's shard
        hook(train, resumed=resume is not None)
    for cb in callbacks:
        cb.on_fit_start(state, len(batches), config)
    model.train()
    # Collected once, after the hooks: a per-step walk over the module tree costs ~10 µs.
    params = list(model.parameters())
    if ddp is not None:
        ddp.sync_parameters(params)
    interrupt = _StepBoundaryInterrupt(synced=ddp is not None)
    interrupt.install()
    sync = _HostSync(model, state, config.sync_every, device)
    scheduled, total_steps = config.lr_schedule != "constant", config.epochs * len(batches)
    try:
        while state.epoch < config.epochs and not state.stopped_early:
            for batch in batches.epoch(state.epoch, state.batch):
                if scheduled:
                    _set_lr(optimizer, scheduled_lr(config, state.step, total_steps))
                loss, monitors = model.loss(batch, generator=generator)  # type: ignore[operator]
                value = _update(loss, params, optimizer, config, sync, last_path, ddp, interrupt)
                state.step += 1
                state.batch += 1
                for cb in callbacks:
                    cb.on_step(state, value, monitors)
                interrupt.check()
                if config.max_steps is not None and state.step >= config.max_steps:
                    sync.flush(last_path)
                    last_path = save("last") or last_path
                    return TrainResult(state, last_path)
            sync.flush(last_path)
            metrics = _close_epoch(model, state, config, valid, validate, ddp)
            improved = _track_best(state, metrics, config)
            _decay_on_plateau(optimizer, state, metrics, config, improved)
            if scheduled:
                metrics["lr"] = float(optimizer.param_groups[0]["lr"])
            if state.epoch % config.checkpoint_every == 0 or state.epoch == config.epochs:
                last_path = save("last") or last_path  # None without a checkpoint folder
            if improved:
                save("best")
            for cb in callbacks:
                cb.on_epoch_end(state, metrics)
            if ddp is not None:  # a callback may stop on a rank-local fact (the time budget)
                state.stopped_early = ddp.agree(state.stopped_early)
            interrupt.check()
    except KeyboardInterrupt:
        state.interrupted = True
        if not interrupt.forced:  # raised at a step boundary: weights and position agree
            sync.flush(last_path)
            last_path = save("last") or last_path
        for cb in callbacks:
            cb.on_fit_end(state)
        raise
    finally:
        interrupt.restore()
    last_path = save("last") or last_path
    for cb in callbacks:
        cb.on_fit_end(state)
    if ddp is not None:  # every file rank 0 writes exists when any rank returns
        distributed.barrier()
    return TrainResult(state, last_path)


def _close_epoch(
    model: nn.Module,
    state: TrainState,
    config: TrainConfig,
    valid: Any,
    validate: Callable[[Any], dict[str, float]] | None,
    ddp: _DataParallel | None,
) -> dict[str, float]:
    """The finished epoch's figures (train loss; validation when due), appended to the
    history; ``state`` moves to the start of the next epoch.

    Data-parallel, every rank validates (an evaluation may share its work over the ranks, with
    collectives inside: ``rnnrbm.evaluation`` deals its AIS blocks to them) and every rank then
    takes rank 0's figures, so the best epoch, early stopping and lr decay are decided alike
    everywhere."""
    metrics = {"epoch": float(state.epoch + 1)}
    if state.batch:
        metrics["train_loss"] = state.epoch_loss_sum / state.batch
    # By epoch number, not by call count: a resumed run checks the same epochs.
    due = (state.epoch + 1) % config.valid_every == 0
    if valid is not None and validate is not None and due:
        model.eval()
        figures = validate(valid)
        metrics.update(figures if ddp is None else ddp.agree(figures))
        model.train()
    state.epoch += 1
    state.batch = 0
    state.epoch_loss_sum = 0.0
    state.history.append(metrics)
    return metrics


def _save(
    folder: Path | None,
    name: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    state: TrainState,
    config: TrainConfig,
    meta: dict[str, Any] | None,
    ddp: _DataParallel | None = None,
) -> Path | None:
    """Write ``folder/name.safetensors`` with everything a resume needs (None: no folder).

    Data-parallel, every rank calls this at the same points (it gathers the ranks' sampling
    states) and rank 0 alone writes; the header's ``extra.world_size`` records the rank count.
    """
    if folder is None:
        return None
    path = folder / f"{name}.safetensors"
    rng_states, extra = _rng_states(generator), None
    if ddp is not None:
        rng_states.update(ddp.sampler_states(generator, model))
        extra = {"world_size": ddp.world}
        if ddp.rank != 0:
            return path
    return save_checkpoint(
        path,
        model,
        optimizer=optimizer,
        rng_states=rng_states,
        train_state=asdict(state),
        train_config=asdict(config),
        extra=extra,
        meta=meta,
    )


def _resume(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    ddp: _DataParallel | None = None,
    seed: int = 0,
) -> TrainState | None:
    """Load weights, optimiser state and the sampler's state from ``path``; its TrainState.

    Data-parallel, every rank reads the same file; rank r > 0 then takes its own sampling state
    from it (``_DataParallel.restore_sampler``)."""
    ck = load_checkpoint(path)
    model.load_state_dict(ck.model.state_dict())
    if ck.optimizer_state is not None:
        optimizer.load_state_dict(ck.optimizer_state)
    _check_world(path, ck.meta, ck.train_state, 1 if ddp is None else ddp.world)
    if ddp is not None and ddp.rank > 0:
        step = int((ck.train_state or {}).get("step", 0))
        ddp.restore_sampler(ck.rng_states, generator, model, seed, step)
    if "sampler" in ck.rng_states and (ddp is None or ddp.rank == 0):
        generator.set_state(ck.rng_states["sampler"].to(generator.get_state().device))
    if not ck.train_state:
        return None
    state = TrainState(**ck.train_state)
    state.interrupted = state.stopped_early = False
    return state


def _check_world(
    path: str | Path, meta: dict[str, Any], train_state: dict[str, Any] | None, world: int
) -> None:
    """A checkpoint taken mid-epoch resumes only with as many ranks: its position counts this
    rank's steps in the epoch, which depend on the rank count (at an epoch boundary any count
    resumes)."""
    stored = int((meta.get("extra") or {}).get("world_size", 1))
    if stored != world and (train_state or {}).get("batch", 0):
        raise InputError(
            error_message(
                f"resume {path}",
                f"{stored} process(es), the number that wrote this mid-epoch checkpoint",
                f"{world}",
                f"relaunch with --nproc_per_node {stored}" if stored > 1 else "run one process",
            )
        )


def _update(
    loss: Tensor,
    params: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    sync: _HostSync,
    last_path: Path | None,
    ddp: _DataParallel | None = None,
    interrupt: _StepBoundaryInterrupt | None = None,
) -> Tensor:
    """One optimiser step from ``loss``; returns its detached value (a 0-dim tensor).

    Data-parallel, the gradients are averaged over the ranks before the norm, the clip and the
    step, and the value is the ranks' mean loss: every rank then takes the same decisions."""
    for p in params:  # zero_grad(set_to_none=True) without its per-call profiler scope
        p.grad = None
    loss.backward()
    value = loss.detach()
    if ddp is not None:
        value = value.new_tensor(ddp.average(params, loss, interrupt or _StepBoundaryInterrupt()))
    # One norm serves the non-finite check and the clip.
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads) if grads else None
    if sync.push(value, norm):  # due: check this step (and the pending ones) before updating
        sync.flush(last_path)
    if config.clip_grad_norm is not None and norm is not None:
        torch.nn.utils.clip_grads_with_norm_(params, config.clip_grad_norm, norm)
    optimizer.step()
    return value


class _HostSync:
    """The loop's host syncs, batched: the steps' losses (for the epoch's mean) and gradient
    norms (the non-finite check) wait on the device and come to the host in one transfer every
    ``every`` steps and before each epoch's end, checkpoint and stop.

    On the CPU ``every`` is 1 and each step is checked before its update (a CPU "sync" waits for
    nothing). On a GPU the default is 32: a sync drains the kernel queue, so a step that turns
    NaN/Inf stops the run at the next sync, up to 31 updates later; the error names the first
    bad step and the last good checkpoint, and the corrupt weights are never saved.
    """

    def __init__(
        self, model: nn.Module, state: TrainState, every: int | None, device: torch.device
    ) -> None:
        self.model, self.state = model, state
        self.every = every or (1 if device.type == "cpu" else 32)
        self.losses: list[Tensor] = []
        self.norms: list[Tensor] = []
        self.first_step = 0  # global step of losses[0]

    def push(self, loss: Tensor, norm: Tensor | None) -> bool:
        """Queue one step's values; whether a sync is due."""
        if not self.losses:
            self.first_step = self.state.step + 1
        self.losses.append(loss)
        self.norms.append(loss.new_zeros(()) if norm is None else norm.to(loss.dtype))
        return len(self.losses) >= self.every

    def flush(self, last_path: Path | None) -> None:
        """Bring the pending values to the host (one transfer), add the losses to the epoch's
        sum in step order, and stop on the first non-finite step."""
        if not self.losses:
            return
        pending = self.losses + self.norms
        values = (torch.stack(pending) if len(pending) > 1 else pending[0].reshape(1)).tolist()
        n = len(self.losses)
        self.losses, self.norms = [], []
        for i, (value, norm) in enumerate(zip(values[:n], values[n:], strict=True)):
            if not (math.isfinite(value) and math.isfinite(norm)):
                raise _non_finite(self.model, value, self.first_step + i, last_path)
            self.state.epoch_loss_sum += value


def scheduled_lr(config: TrainConfig, step: int, total: int) -> float:
    """The lr of optimiser step ``step`` (from 0) of ``total`` under ``config.lr_schedule``:
    ``lr`` at step 0, ``lr · lr_final`` at the last step."""
    if config.lr_schedule == "constant" or total <= 1:
        return config.lr
    progress = min(step / (total - 1), 1.0)
    if config.lr_schedule == "cosine":
        fall = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        fall = 1.0 - progress
    return config.lr * (config.lr_final + (1.0 - config.lr_final) * fall)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


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
