"""The recipe: one frozen dataclass tree that owns every setting of a training run.

``Recipe`` = model + data + stages (frame pretraining, recurrence pretraining, sequence
training) + validation + evaluation + generation, plus what the recipe is expected to reach.
Each section checks its own fields in ``__post_init__`` through the project's error template
(key path, allowed range, what came, the fix), so a recipe that exists is a valid one.
Recipes round-trip through TOML (:meth:`Recipe.from_toml` / :meth:`Recipe.to_toml`) and plain
dicts (the checkpoint header stores :meth:`Recipe.to_dict`). TOML has no null, so optional
settings use 0 for "none" (stated per field).
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import tomli_w

from rnnrbm.training import LR_SCHEDULES
from rnnrbm.validation import InputError, InputTypeError, check_number, error_message

__all__ = [
    "DataSpec",
    "EvaluationSpec",
    "Expected",
    "FrameStage",
    "GenerationSpec",
    "ModelSpec",
    "RNNStage",
    "Recipe",
    "SequenceStage",
    "Stages",
    "ValidationSpec",
    "setting",
]

MODEL_TYPES = ("rnn-rbm", "rtrbm", "lstm-rtrbm", "rnn-nade", "rbm")
RNN_MODELS = ("rnn-rbm", "rnn-nade")  # the models with an RNN recurrence (activation applies)


# ----------------------------------------------------------------------------- field rules
def _setting(
    default: Any,
    doc: str,
    *,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
    zero: bool = False,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A recipe field with its rule: a range ``[low, high]`` (ends open on request; ``zero``
    also allows 0, meaning "none"), or a set of ``choices``; ``doc`` is its one-line help."""
    rule = {"doc": doc, "low": low, "high": high, "open_low": open_low, "open_high": open_high}
    rule.update(zero=zero, choices=choices)
    return field(default=default, metadata=rule)


def _check_field(path: str, value: Any, default: Any, rule: Mapping[str, Any]) -> Any:
    """``value`` checked against the type of ``default`` and ``rule``; returns it normalised
    (an int given for a float setting becomes a float)."""
    kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[
        type(default)
    ]
    ok_type = isinstance(value, type(default)) and not (
        isinstance(value, bool) and not isinstance(default, bool)
    )
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value, ok_type = float(value), True
    if not ok_type:
        raise InputTypeError(
            error_message(path, kind, f"{value!r} ({type(value).__name__})", f"write {default!r}")
        )
    if rule["choices"] is not None and value not in rule["choices"]:
        expected = "one of " + ", ".join(repr(c) for c in rule["choices"])
        raise InputError(error_message(path, expected, repr(value), "pick one of those"))
    if isinstance(value, int | float) and not isinstance(value, bool):
        check_number(
            value, path, low=rule["low"], high=rule["high"], open_low=rule["open_low"],
            open_high=rule["open_high"], zero=rule["zero"], kind=kind, fix=f"e.g. {default!r}",
        )  # fmt: skip
    return value


class _Section:
    """Checks every field against its rule after construction (frozen: set via object)."""

    PATH: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, _Section):
                continue
            path = f"{self.PATH}.{f.name}" if self.PATH else f.name
            checked = _check_field(path, value, f.default, f.metadata)
            object.__setattr__(self, f.name, checked)
        self._check_together()

    def _check_together(self) -> None:
        """Rules across fields (override where a section has them)."""


# ----------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class ModelSpec(_Section):
    """What to build (``models.sequence.build_sequence_model``; ``rbm``: ``models.RBM``)."""

    PATH: ClassVar[str] = "model"
    type: str = _setting("rnn-rbm", "the model", choices=MODEL_TYPES)
    hidden: int = _setting(150, "hidden units per frame", low=1)
    recurrent: int = _setting(100, "recurrent units (rnn-rbm, lstm-rtrbm, rnn-nade)", low=1)
    activation: str = _setting(
        "sigmoid",
        "the RNN's non-linearity (rnn-rbm, rnn-nade): the paper's sigmoid or the tutorial's tanh",
        choices=("sigmoid", "tanh"),
    )
    gradient: str = _setting(
        "autograd",
        "the temporal models' gradient: autograd's, or 'direct', written out (the CD surrogate's "
        "and, on CPU, the RNN's backward pass): faster at small batches, rounds differently",
        choices=("autograd", "direct"),
    )
    k: int = _setting(15, "Gibbs steps of CD-k (RBM frames; rbm: PCD-k)", low=1)
    recurrent_init_std: float = _setting(
        0.0, "std of the recurrent weights' N(0, s²) init (0: the model's default)", low=0.0
    )

    def _check_together(self) -> None:
        if self.activation != "sigmoid" and self.type not in RNN_MODELS:
            raise InputError(
                error_message(
                    "model.activation",
                    f"'sigmoid' for {self.type!r} (only {' and '.join(RNN_MODELS)} have an RNN)",
                    repr(self.activation),
                    "drop model.activation",
                )
            )
        if self.gradient != "autograd" and self.type == "rbm":
            raise InputError(
                error_message(
                    "model.gradient",
                    "'autograd' for 'rbm' (the written-out gradient is the temporal models')",
                    repr(self.gradient),
                    "drop model.gradient",
                )
            )


@dataclass(frozen=True)
class DataSpec(_Section):
    """Where the pieces come from and how they are framed and cut."""

    PATH: ClassVar[str] = "data"
    source: str = _setting(
        "jsb",
        "jsb | nottingham | musedata | piano-midi | a .json.gz/.pickle file | MIDI file/folder",
    )
    frames_per_beat: int = _setting(
        0, "frames per beat of MIDI input and output (0: the dataset's: JSB 1, else 2)", low=1,
        zero=True,
    )  # fmt: skip
    transpose_to_c: bool = _setting(True, "move MIDI pieces to C major / C minor")
    sustain: bool = _setting(False, "apply the sustain pedal (CC64) when reading MIDI")
    tempo_bpm: float = _setting(120.0, "beats per minute of generated music", low=1.0, high=1000)
    max_len: int = _setting(0, "chunk length in frames (0: whole pieces)", low=2, zero=True)
    carry_state: bool = _setting(False, "chunks carry their piece's recurrent state")
    stream: str = _setting(
        "auto",
        "read a prepared corpus shard by shard, never all in memory: on | off | auto (on when "
        "its train split holds more than 5 million frames; see data.streaming)",
        choices=("auto", "on", "off"),
    )
    stream_window: int = _setting(
        4, "shards per window of a streamed epoch (the shards held in memory at once)", low=1
    )

    def _check_together(self) -> None:
        if not self.source:
            raise InputError(error_message("data.source", "a dataset", "''", "e.g. 'jsb'"))


@dataclass(frozen=True)
class FrameStage(_Section):
    """Stage 1: the frame model alone on independent training frames (BL2012 §5)."""

    PATH: ClassVar[str] = "stages.frames"
    epochs: int = _setting(5, "epochs (0: skip the stage)", low=0)
    lr: float = _setting(1e-2, "learning rate", low=0.0, open_low=True)
    batch_size: int = _setting(100, "frames per batch", low=1)
    k: int = _setting(1, "CD-k of this stage (RBM frames)", low=1)


@dataclass(frozen=True)
class RNNStage(_Section):
    """Stage 2: the recurrence alone on the per-note cross-entropy (BL2012 §5); it uses the
    sequence stage's optimiser, lr, batch and clipping."""

    PATH: ClassVar[str] = "stages.rnn"
    epochs: int = _setting(0, "epochs (0: skip the stage)", low=0)


@dataclass(frozen=True)
class SequenceStage(_Section):
    """Stage 3: the whole model on sequence batches (CD-k surrogate or exact NLL)."""

    PATH: ClassVar[str] = "stages.sequence"
    epochs: int = _setting(200, "epochs at most", low=1)
    batch_size: int = _setting(8, "sequences (rbm: frames) per batch", low=1)
    optimizer: str = _setting(
        "adam", "optimiser", choices=("adam", "adamw", "sgd", "rmsprop", "adagrad")
    )
    lr: float = _setting(1e-3, "learning rate", low=0.0, open_low=True)
    momentum: float = _setting(0.0, "SGD momentum", low=0.0, high=1.0, open_high=True)
    nesterov: bool = _setting(False, "Nesterov momentum (SGD)")
    weight_decay: float = _setting(
        0.0, "L2 on the weight matrices (biases are not decayed)", low=0.0
    )
    clip_grad_norm: float = _setting(10.0, "gradient-norm clip", low=0.0, open_low=True, zero=True)
    lr_decay: float = _setting(
        0.0, "multiply the lr by this on a validation plateau", low=0.0, high=1.0,
        open_low=True, open_high=True, zero=True,
    )  # fmt: skip
    lr_patience: int = _setting(2, "validation checks without a new best per lr decay", low=1)
    lr_schedule: str = _setting(
        "constant",
        "a fixed lr schedule over all the stage's steps, needing no validation: constant | "
        "cosine | linear (from lr to lr · lr_final)",
        choices=LR_SCHEDULES,
    )
    lr_final: float = _setting(0.0, "the scheduled lr's last value, as a fraction of lr", low=0.0,
                               high=1.0)  # fmt: skip
    time_budget: float = _setting(
        0.0, "seconds for the whole run; stops after the epoch that would overrun", low=0.0,
        open_low=True, zero=True,
    )  # fmt: skip
    checkpoint_every: int = _setting(1, "epochs between last.safetensors writes", low=1)

    def _check_together(self) -> None:
        if self.lr_schedule != "constant" and self.lr_decay:
            raise InputError(
                error_message(
                    "stages.sequence.lr_decay",
                    f"0 beside lr_schedule = {self.lr_schedule!r} (both would set the lr)",
                    repr(self.lr_decay),
                    "drop lr_decay or lr_schedule",
                )
            )


@dataclass(frozen=True)
class Stages(_Section):
    PATH: ClassVar[str] = "stages"
    frames: FrameStage = field(default_factory=FrameStage)
    rnn: RNNStage = field(default_factory=RNNStage)
    sequence: SequenceStage = field(default_factory=SequenceStage)


@dataclass(frozen=True)
class ValidationSpec(_Section):
    """The validation NLL that picks the best epoch, stops early and decays the lr."""

    PATH: ClassVar[str] = "validation"
    every: int = _setting(
        1, "epochs between checks (0: none during training; the last epoch is kept)", low=1,
        zero=True,
    )  # fmt: skip
    frames: int = _setting(
        0, "first pieces up to this many frames (0: all; a streamed corpus: 50,000)", low=1,
        zero=True,
    )  # fmt: skip
    method: str = _setting(
        "auto",
        "RBM frames' estimator: auto (exact when tiny, else forward AIS: optimistic) | ais | "
        "raise (reverse AIS from each frame: conservative); NADE is exact",
        choices=("auto", "ais", "raise"),
    )
    ais_runs: int = _setting(10, "AIS runs per frame (RBM frames; NADE is exact)", low=1)
    ais_betas: int = _setting(300, "AIS temperatures", low=2)
    patience: int = _setting(0, "checks without a new best before stopping (0: never)", low=1,
                             zero=True)  # fmt: skip


@dataclass(frozen=True)
class EvaluationSpec(_Section):
    """The benchmark protocol that ``rnnrbm evaluate`` applies by default."""

    PATH: ClassVar[str] = "evaluation"
    split: str = _setting("test", "the split to evaluate")
    method: str = _setting("auto", "log Z: exact, AIS or auto", choices=("auto", "exact", "ais"))
    ais_runs: int = _setting(100, "AIS runs per frame", low=1)
    ais_betas: int = _setting(1000, "AIS temperatures", low=2)
    ais_base: str = _setting(
        "gibbs", "AIS base model", choices=("gibbs", "mean-field", "bias", "data", "zero")
    )
    conservative: bool = _setting(
        True, "beside forward AIS (optimistic), the RAISE bound (conservative) on RBM frames"
    )
    accuracy_samples: int = _setting(20, "samples per frame for frame accuracy (0: skip)", low=0)
    gibbs_steps: int = _setting(25, "Gibbs steps per accuracy sample", low=1)


@dataclass(frozen=True)
class GenerationSpec(_Section):
    """What ``rnnrbm generate`` and the demo sample by default."""

    PATH: ClassVar[str] = "generation"
    steps: int = _setting(200, "frames per piece", low=1)
    gibbs_steps: int = _setting(25, "Gibbs steps per frame", low=1)


@dataclass(frozen=True)
class Expected(_Section):
    """What this recipe measured (``rnnrbm recipes`` shows it); 0 / '' where not measured."""

    PATH: ClassVar[str] = "expected"
    test_nll: float = _setting(0.0, "test NLL, nats per frame (0: not measured)", low=0.0)
    estimator: str = _setting("", "how test_nll was estimated")
    train_seconds: float = _setting(0.0, "training wall time", low=0.0)
    epochs: int = _setting(0, "sequence epochs run", low=0)
    threads: int = _setting(0, "CPU threads of that run", low=0)
    measured: str = _setting("", "date of the measurement")
    note: str = _setting("", "anything else a user should know")


@dataclass(frozen=True)
class Recipe(_Section):
    """Every setting of a run. Build with keywords, :meth:`from_dict` or :meth:`from_toml`;
    derive variants with :meth:`override` (the tree is frozen)."""

    PATH: ClassVar[str] = ""
    name: str = _setting("custom", "the recipe's name")
    description: str = _setting("", "one line on what it is for")
    seed: int = _setting(0, "seed of initialisation, batches and sampling", low=0)
    device: str = _setting("auto", "cpu | cuda | cuda:N | auto")
    threads: int = _setting(0, "CPU threads for training (0: PyTorch's default)", low=0)
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    stages: Stages = field(default_factory=Stages)
    validation: ValidationSpec = field(default_factory=ValidationSpec)
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    generation: GenerationSpec = field(default_factory=GenerationSpec)
    expected: Expected = field(default_factory=Expected)

    def _check_together(self) -> None:
        if self.data.stream == "on" and self.model.type == "rbm":
            raise InputError(
                error_message(
                    "data.stream",
                    "'auto' or 'off' for model.type 'rbm' (a plain RBM trains on frames in "
                    "memory; streaming serves the sequence models)",
                    "'on'",
                    "drop data.stream, or train a sequence model",
                )
            )

    # ------------------------------------------------------------------ dicts and TOML
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "recipe") -> Recipe:
        """Build from nested mappings; an unknown key or bad value names its key path.

        ``where`` (a file name) prefixes every error message."""
        try:
            return _build(cls, data, "")
        except (InputError, InputTypeError) as exc:
            raise type(exc)(f"{where}: {exc}") from exc

    @classmethod
    def from_toml(cls, path: str | Path) -> Recipe:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError(
                error_message(f"recipe {path}", "a readable TOML file", str(exc), "fix the path")
            ) from exc
        except tomllib.TOMLDecodeError as exc:
            raise InputError(
                error_message(f"recipe {path}", "valid TOML", str(exc), "fix the syntax")
            ) from exc
        return cls.from_dict(data, where=str(path))

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def override(
        self, changes: Mapping[str, Any] | Iterable[str], *, where: str = "--set"
    ) -> Recipe:
        """A copy with ``{"stages.sequence.lr": 1e-3}`` or ``["stages.sequence.lr=1e-3"]``
        applied; a ``KEY=VALUE`` value is read as TOML (a bare word is a string). ``where``
        (e.g. the flag that asked for the change) prefixes error messages."""
        items = changes.items() if isinstance(changes, Mapping) else map(_parse_assignment, changes)
        data = self.to_dict()
        for key, value in items:
            *parents, leaf = key.split(".")
            node: Any = data
            for i, part in enumerate(parents):
                node = node.get(part) if isinstance(node, dict) else None
                if not isinstance(node, dict):
                    _unknown(".".join(parents[: i + 1]), _fields_at(".".join(parents[:i])), where)
            if leaf not in node or isinstance(node[leaf], dict):
                _unknown(key, _fields_at(".".join(parents)), where)
            node[leaf] = value
        return Recipe.from_dict(data, where=where)

    def with_expected_cleared(self) -> Recipe:
        """The recipe a run resolves to: its measured figures no longer describe it."""
        return dataclasses.replace(self, expected=Expected())


# ----------------------------------------------------------------------------- helpers
def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise InputTypeError(
            error_message(prefix or "recipe", "a table", type(data).__name__, "write [section]")
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            _unknown(path, list(fields))
        default = fields[key].default_factory  # type: ignore[misc]
        if default is not dataclasses.MISSING:
            kwargs[key] = _build(type(default()), value, path)
        else:
            kwargs[key] = value
    return cls(**kwargs)


def _section_fields(path: str) -> dict[str, dataclasses.Field[Any]]:
    """The fields of the section at ``path`` (``""``: the top level; ``"stages.sequence"``)."""
    cls: Any = Recipe
    for part in filter(None, path.split(".")):
        cls = type({f.name: f for f in dataclasses.fields(cls)}[part].default_factory())  # type: ignore[misc]
    return {f.name: f for f in dataclasses.fields(cls)}


def _fields_at(path: str) -> list[str]:
    return list(_section_fields(path))


def setting(key: str) -> dataclasses.Field[Any]:
    """The field of a setting by key path (``"stages.sequence.lr"``): its default and, in
    ``metadata``, its rule and one-line ``doc`` (the CLI builds its flags from these)."""
    *parents, leaf = key.split(".")
    return _section_fields(".".join(parents))[leaf]


def _unknown(path: str, known: list[str], where: str = "") -> None:
    message = error_message(
        path, f"a known key ({', '.join(known)})", "an unknown key", "fix its name"
    )
    raise InputError(f"{where}: {message}" if where else message)


def _parse_assignment(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise InputError(
            error_message("--set", "KEY=VALUE such as stages.sequence.lr=1e-3", repr(text), "fix")
        )
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word: a string (data.source=jsb)
    return key.strip(), value
