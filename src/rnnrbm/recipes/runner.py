"""``run(recipe, out)``: build the model a recipe names and train it through its stages.

One call does what a results row needs: load and frame the data, build (or resume) the model,
run frame pretraining → recurrence pretraining → sequence training through ``training.fit``
(BL2012 §5), keep the best validation epoch, and write self-describing checkpoints: every
checkpoint's header carries the resolved recipe and the data framing, so ``evaluate``,
``generate`` and ``score`` need nothing else. ``out/recipe.toml`` is written before training.

Under ``torchrun`` every rank calls :func:`run` with the same recipe: it joins the process group,
checks that every rank has the same recipe and data (fail fast, naming the first field that
differs), and trains data-parallel through ``training.fit``; rank 0 alone writes files
(docs/design.md §11).

A streamed corpus (``data.stream``; docs/design.md §10) trains on shard-local epochs
(``data.streaming.StreamingBatches``), pretrains the frames on a bounded sample of its shards
and validates on the first pieces of its valid split only; ``RunResult.stream`` says what was
read.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from rnnrbm import distributed
from rnnrbm.checkpoint import load_checkpoint, read_meta
from rnnrbm.data.music_data import MusicData, load_music_data
from rnnrbm.data.streaming import FRAME_SAMPLE_FRAMES, STREAM_VALID_FRAMES, CorpusSplit
from rnnrbm.evaluation import Method
from rnnrbm.files import atomic_write_bytes
from rnnrbm.models import RBM
from rnnrbm.models.sequence import SequenceModel, build_sequence_model
from rnnrbm.music.midi import MidiReadOptions
from rnnrbm.music.pianoroll import LOWEST_PITCH, N_KEYS
from rnnrbm.recipes.catalog import resolve
from rnnrbm.recipes.schema import RNN_MODELS, Recipe
from rnnrbm.recipes.stages import (
    BestWeights,
    TimeBudget,
    ValidationMonitor,
    pretrain_frames,
    pretrain_recurrence,
    sequence_epochs,
)
from rnnrbm.training import Callback, RowBatches, TrainConfig, TrainResult, fit
from rnnrbm.validation import (
    CheckpointError,
    InputError,
    InputTypeError,
    error_message,
    resolve_device,
)
from rnnrbm.version import __version__

__all__ = ["RunResult", "framing_of", "load_data", "run"]

RECIPE_FILE = "recipe.toml"
# A resumed run may change these (more epochs, a longer budget); anything else must match.
RESUMABLE = ("stages.sequence.epochs", "stages.sequence.time_budget")


@dataclass
class RunResult:
    """What :func:`run` produced. ``model`` holds the best validation epoch's weights (the
    last epoch's when nothing was validated); ``best``/``last`` are checkpoint paths (None
    without ``out``). ``stream`` (a streamed corpus only) describes what each stage read:
    the epochs' shards and windows, the frame-pretraining sample and the validation pieces."""

    recipe: Recipe
    model: nn.Module
    framing: dict[str, Any]
    train: TrainResult
    monitor: str | None
    best_epoch: int | None
    valid_estimator: str
    epoch_seconds: list[tuple[int, float]]
    timings: dict[str, float] = field(default_factory=dict)
    best: Path | None = None
    last: Path | None = None
    recipe_path: Path | None = None
    stream: dict[str, Any] | None = None

    @property
    def history(self) -> list[dict[str, float]]:
        return self.train.history

    @property
    def epochs(self) -> int:
        return self.train.state.epoch

    def as_dict(self) -> dict[str, Any]:
        state = self.train.state
        paths = {"best": self.best, "last": self.last, "recipe": self.recipe_path}
        out = {
            "recipe": self.recipe.name,
            "model_config": self.model.config(),  # type: ignore[operator]
            "framing": self.framing,
            "epochs": state.epoch,
            "steps": state.step,
            "stopped_early": state.stopped_early,
            "best": None
            if state.best is None
            else {"epoch": state.best_epoch, "metric": self.monitor, "value": state.best},
            "valid_estimator": self.valid_estimator,
            "timings_s": {k: round(v, 2) for k, v in self.timings.items()},
            "history": [
                {**h, "seconds": round(t, 2)}
                for h, (_, t) in zip(self.history, self.epoch_seconds, strict=False)
            ]
            + self.history[len(self.epoch_seconds) :],
            "paths": {k: str(v) for k, v in paths.items() if v is not None},
        }
        if self.stream is not None:
            out["stream"] = self.stream
        return out


# ----------------------------------------------------------------------------- data
def load_data(recipe: Recipe) -> MusicData:
    """The recipe's pieces, read with its framing (MIDI: frames per beat, key, pedal); a
    corpus is streamed by ``data.stream`` (``auto`` never streams for a plain RBM, which
    trains on all frames in memory)."""
    spec = recipe.data
    options = MidiReadOptions(
        frames_per_beat=spec.frames_per_beat or 2,
        transpose_to_c=spec.transpose_to_c,
        apply_sustain=spec.sustain,
    )
    stream = "off" if recipe.model.type == "rbm" else spec.stream
    return load_music_data(spec.source, options=options, stream=stream, window=spec.stream_window)


def framing_of(recipe: Recipe, data: MusicData) -> dict[str, Any]:
    """How the run's pieces map to time and pitch: stored in every checkpoint it writes."""
    return {
        "dataset": data.dataset.name,
        "source": recipe.data.source,
        "kind": data.kind,
        "frames_per_beat": recipe.data.frames_per_beat or data.frames_per_beat,
        "tempo_bpm": recipe.data.tempo_bpm,
        "transpose_to_c": data.transpose_to_c,
        "sustain": recipe.data.sustain,
        "lowest_key": LOWEST_PITCH,
        "keys": N_KEYS,
    }


# ----------------------------------------------------------------------------- model
def build_model(recipe: Recipe, n_visible: int, device: torch.device) -> nn.Module:
    """The untrained model the recipe names."""
    spec = recipe.model
    if spec.type == "rbm":
        return RBM(n_visible, spec.hidden, k=spec.k, method="pcd", seed=recipe.seed, device=device)
    options: dict[str, Any] = {"n_hidden": spec.hidden, "device": device, "seed": recipe.seed}
    options["gradient"] = spec.gradient
    if spec.type != "rtrbm":
        options["n_recurrent"] = spec.recurrent
    if spec.type in RNN_MODELS:
        options["activation"] = spec.activation
    if spec.recurrent_init_std > 0:
        options["recurrent_init_std"] = spec.recurrent_init_std
    k = None if spec.type == "rnn-nade" else spec.k
    return build_sequence_model(spec.type, n_visible=n_visible, k=k, **options)


def _sequence_config(recipe: Recipe, out: Path | None, monitor: str | None) -> TrainConfig:
    """The sequence stage's loop settings (the rbm's only stage)."""
    st, va = recipe.stages.sequence, recipe.validation
    return TrainConfig(
        epochs=st.epochs,
        batch_size=st.batch_size,
        lr=st.lr,
        optimizer=st.optimizer,
        momentum=st.momentum,
        nesterov=st.nesterov,
        weight_decay=st.weight_decay,
        clip_grad_norm=st.clip_grad_norm or None,
        seed=recipe.seed,
        checkpoint_dir=None if out is None else str(out),
        checkpoint_every=st.checkpoint_every,
        monitor=monitor,
        valid_every=va.every or 1,  # 0 (no checks): fit gets no data (_validation_split)
        patience=va.patience or None,
        lr_decay=st.lr_decay or None,
        lr_patience=st.lr_patience,
        lr_schedule=st.lr_schedule,
        lr_final=st.lr_final,
    )


def _validation_split(recipe: Recipe, ds: Any) -> Any:
    """The split that training checks, or None: no ``valid`` split, or ``validation.every = 0``
    (then fit sees no validation data and the last epoch is the run's choice)."""
    return ds.splits.get("valid") if recipe.validation.every else None


@dataclass(frozen=True)
class _Job:
    """What a model's trainer needs besides the model."""

    recipe: Recipe
    data: MusicData
    folder: Path | None
    meta: dict[str, Any]
    resume: bool
    progress: bool
    callbacks: Sequence[Callback]
    start: float


# ----------------------------------------------------------------------------- run
@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_resume(recipe: Recipe, last: Path) -> None:
    """A resumed run must be the run that wrote ``last`` (only ``RESUMABLE`` may differ)."""
    stored = read_meta(last).get("recipe")
    if stored is None:
        raise CheckpointError(
            error_message(
                f"checkpoint {last}",
                "a run written by `recipes.run` (its header holds the recipe)",
                "a checkpoint without a recipe",
                "start a new run in another folder",
            )
        )
    mine = _flatten(recipe.with_expected_cleared().to_dict())
    theirs = _flatten(Recipe.from_dict(stored, where=str(last)).with_expected_cleared().to_dict())
    for key, value in mine.items():
        if key not in RESUMABLE and theirs.get(key) != value:
            raise InputError(
                error_message(
                    f"resume: {key}",
                    f"{theirs.get(key)!r} (the value the run in {last.parent} was started with)",
                    repr(value),
                    "resume with the run's recipe, or start a new run in another folder",
                )
            )


def _fingerprint(recipe: Recipe, data: MusicData, last: Path | None) -> dict[str, Any]:
    """What every rank of a data-parallel run must share: the recipe (flat keys), the data's
    size per split, the checkpoint it resumes from, and the library versions."""
    out = _flatten(recipe.to_dict())
    for split, rolls in data.dataset.splits.items():
        if isinstance(rolls, CorpusSplit):  # from the index: decoding it all is what we avoid
            out[f"data.splits.{split}"] = rolls.fingerprint()
            continue
        frames = sum(len(r) for r in rolls)
        notes = sum(int(np.count_nonzero(r)) for r in rolls)
        out[f"data.splits.{split}"] = f"{len(rolls)} pieces, {frames} frames, {notes} notes"
    out["resume from"] = None if last is None else f"{last} at step {_step_of(last)}"
    out["rnnrbm version"], out["torch version"] = __version__, torch.__version__
    return out


def _step_of(last: Path) -> int:
    return int((read_meta(last).get("train_state") or {}).get("step", 0))


def _check_ranks_agree(recipe: Recipe, data: MusicData, last: Path | None) -> None:
    """Fail fast, on every rank, when the ranks of a data-parallel run differ in anything
    that shapes the run: they would otherwise train out of step or deadlock."""
    if distributed.world_size() == 1:
        return
    mismatch = distributed.first_mismatch(_fingerprint(recipe, data, last))
    if mismatch is not None:
        key, rank, reference, theirs = mismatch
        raise InputError(
            error_message(
                f"data-parallel run: {key}",
                f"{reference!r} on every rank (rank 0's value)",
                f"{theirs!r} on rank {rank}",
                "launch every rank with the same command line, recipe and data",
            )
        )


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def run(
    recipe: Recipe | str | Path,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    data: MusicData | None = None,
    progress: bool = False,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Train the recipe's model; returns a :class:`RunResult`.

    ``recipe`` is a :class:`Recipe`, a bundled name or a TOML path. With ``out`` the run writes
    ``recipe.toml``, ``last.safetensors`` (every ``checkpoint_every`` epochs, on Ctrl-C and at
    the end) and ``best.safetensors`` (each new best validation epoch). ``resume=True``
    continues the run in ``out`` exactly (the pretraining stages are not repeated); only
    ``stages.sequence.epochs`` and ``time_budget`` may differ from the run's recipe. ``data``
    replaces loading ``recipe.data.source`` (already loaded pieces; tests and notebooks).

    Under ``torchrun`` every rank calls it alike: the ranks are checked to agree, every stage
    trains data-parallel, rank 0 writes the files, and each rank returns the same model.
    """
    start = time.perf_counter()
    recipe = resolve(recipe).with_expected_cleared()
    folder = None if out is None else Path(out)
    last = None if folder is None else folder / "last.safetensors"
    if resume and (last is None or not last.is_file()):
        raise InputError(
            error_message(
                "resume",
                f"a checkpoint {last} from an earlier run in that folder",
                "no such file",
                "drop resume to start a new run, or pass the folder of the run to continue",
            )
        )
    if resume and last is not None:
        _check_resume(recipe, last)
    elif folder is not None and (folder / "last.safetensors").exists():
        raise InputError(
            error_message(
                f"out {folder}",
                "a folder without a checkpoint (a new run)",
                f"an existing run ({last})",
                "resume it, or choose another folder",
            )
        )
    elif folder is not None and folder.exists() and not folder.is_dir():
        raise InputError(error_message(f"out {folder}", "a folder", "a file", "pass a folder"))
    if data is not None and not isinstance(data, MusicData):
        raise InputTypeError(
            error_message(
                "data",
                "a MusicData (or None: load recipe.data.source)",
                type(data).__name__,
                'wrap a PolyphonicDataset: MusicData(dataset, "benchmark", frames_per_beat, True)',
            )
        )
    device = distributed.local_device(resolve_device(recipe.device))
    distributed.init_from_env(device)  # under torchrun: join the group (idempotent)
    data = data if data is not None else load_data(recipe)
    _check_ranks_agree(recipe, data, last if resume else None)
    framing = framing_of(recipe, data)
    recipe_path = None if folder is None else folder / RECIPE_FILE
    if recipe_path is not None and distributed.is_main():
        atomic_write_bytes(recipe_path, recipe.to_toml().encode())
    with _threads(recipe.threads):
        model = build_model(recipe, data.dataset.splits["train"][0].shape[1], device)
        meta = {"recipe": recipe.to_dict(), "framing": framing}
        job = _Job(recipe, data, folder, meta, resume, progress, callbacks, start)
        if isinstance(model, RBM):
            result = _train_rbm(job, model)
        else:
            result = _train_sequence(job, model)  # type: ignore[arg-type]
    result.recipe_path = recipe_path
    result.timings["total"] = time.perf_counter() - start
    return result


def _restore_best(
    best: BestWeights, model: nn.Module, result: TrainResult, folder: Path | None
) -> None:
    """Load the best epoch's weights: the in-memory copy when this call saw that epoch, else
    (a resumed run whose best epoch came before the resume) ``best.safetensors``."""
    if best.restore() or result.state.best_epoch is None or folder is None:
        return
    path = folder / "best.safetensors"
    if path.is_file():
        model.load_state_dict(load_checkpoint(path).model.state_dict())


def _finish(
    recipe: Recipe,
    model: nn.Module,
    framing: dict[str, Any],
    fit_result: TrainResult,
    folder: Path | None,
    **more: Any,
) -> RunResult:
    best = None if folder is None else folder / "best.safetensors"
    last = fit_result.checkpoint
    if best is not None and not best.is_file() and last is not None and last.is_file():
        # Nothing was validated (no validation data, or a budget that ended the run before the
        # first check): the run's choice is its last epoch, and best.safetensors says so for
        # `rnnrbm evaluate RUN/best.safetensors`, as the model returned here does.
        atomic_write_bytes(best, last.read_bytes())
    return RunResult(
        recipe,
        model,
        framing,
        fit_result,
        best=best if best is not None and best.is_file() else None,
        last=last,
        **more,
    )


def _train_sequence(job: _Job, model: SequenceModel) -> RunResult:
    """The three stages of BL2012 §5 (``recipes.stages``); resume skips the first two."""
    recipe, data, folder, meta = job.recipe, job.data, job.folder, job.meta
    resume, progress, callbacks, start = job.resume, job.progress, job.callbacks, job.start
    ds, st = data.dataset, recipe.stages
    seq, fr = st.sequence, st.frames
    train = ds["train"]
    # A streamed corpus (data.streaming): what each stage reads, for the run's JSON.
    stream: dict[str, Any] = {"frame_pretraining": None, "validation": None}
    timings: dict[str, float] = {}
    if not resume and fr.epochs > 0:
        t = time.perf_counter()
        if isinstance(train, CorpusSplit):  # a bounded sample, not every frame of the corpus
            frames, stream["frame_pretraining"] = train.frame_sample(FRAME_SAMPLE_FRAMES)
        else:
            frames = ds.frames("train")
        pretrain_frames(
            model, frames, epochs=fr.epochs, batch_size=fr.batch_size, lr=fr.lr,
            optimizer=seq.optimizer, k=fr.k, seed=recipe.seed, progress=progress,
        )  # fmt: skip
        del frames
        timings["frames"] = time.perf_counter() - t
    max_len = recipe.data.max_len or None
    if not resume and st.rnn.epochs > 0:
        t = time.perf_counter()
        pretrain_recurrence(
            model, train, epochs=st.rnn.epochs, batch_size=seq.batch_size, lr=seq.lr,
            optimizer=seq.optimizer, max_len=max_len, carry_state=recipe.data.carry_state,
            clip_grad_norm=seq.clip_grad_norm or None, seed=recipe.seed, progress=progress,
        )  # fmt: skip
        timings["rnn"] = time.perf_counter() - t
    va = recipe.validation
    valid = _validation_split(recipe, ds)
    if isinstance(valid, CorpusSplit):  # decode the pieces validation reads, and only those
        limit = va.frames or STREAM_VALID_FRAMES
        valid = valid.head(limit)
        stream["validation"] = {
            "pieces": len(valid),
            "frames": sum(len(r) for r in valid),
            "of_frames": ds["valid"].frames,  # type: ignore[attr-defined]
            "max_frames": limit,
        }
    monitor = "valid_nll" if valid is not None else None
    config = replace(_sequence_config(recipe, folder, monitor), progress=progress)
    validator = ValidationMonitor(
        model, method=cast(Method, va.method), ais_runs=va.ais_runs, ais_betas=va.ais_betas,
        max_frames=va.frames or None, seed=recipe.seed,
    )  # fmt: skip
    budget = TimeBudget(seq.time_budget or None, start)
    best = BestWeights(model)
    t = time.perf_counter()
    batches = sequence_epochs(
        model, train, seq.batch_size, recipe.seed, max_len, recipe.data.carry_state
    )
    streamed = isinstance(train, CorpusSplit)
    if streamed:
        stream = {"epochs": batches.source.describe(), **stream}
    result = fit(
        model, batches, valid, config, [budget, best, *callbacks],
        resume=folder / "last.safetensors" if resume and folder else None,
        validate=validator, checkpoint_meta=meta,
    )  # fmt: skip
    timings["sequence"] = time.perf_counter() - t
    _restore_best(best, model, result, folder)
    return _finish(
        recipe, model, meta["framing"], result, folder, monitor=monitor,
        best_epoch=result.state.best_epoch, valid_estimator=validator.estimator,
        epoch_seconds=budget.log, timings=timings, stream=stream if streamed else None,
    )  # fmt: skip


def _train_rbm(job: _Job, model: RBM) -> RunResult:
    """A plain RBM of independent frames: the loop on rows, monitored by pseudo-likelihood."""
    recipe, data, folder, meta = job.recipe, job.data, job.folder, job.meta
    resume, progress, callbacks, start = job.resume, job.progress, job.callbacks, job.start
    ds = data.dataset
    dtype = next(model.parameters()).dtype

    def frames(split: str) -> torch.Tensor:
        return torch.from_numpy(ds.frames(split)).to(device=model.device, dtype=dtype)

    monitor = "neg_pseudo_loglik" if _validation_split(recipe, ds) is not None else None
    config = replace(_sequence_config(recipe, folder, monitor), progress=progress)
    valid = frames("valid") if monitor else None
    budget = TimeBudget(recipe.stages.sequence.time_budget or None, start)
    best = BestWeights(model)
    t = time.perf_counter()
    result = fit(
        model, RowBatches(frames("train"), config.batch_size, seed=recipe.seed), valid, config,
        [budget, best, *callbacks],
        resume=folder / "last.safetensors" if resume and folder else None,
        checkpoint_meta=meta,
    )  # fmt: skip
    _restore_best(best, model, result, folder)
    return _finish(
        recipe, model, meta["framing"], result, folder, monitor=monitor,
        best_epoch=result.state.best_epoch, valid_estimator="pseudo-likelihood",
        epoch_seconds=budget.log, timings={"sequence": time.perf_counter() - t},
    )  # fmt: skip
