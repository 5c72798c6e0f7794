"""Checkpoints: one safetensors file holding the tensors, with JSON in its header for the rest.

Layout of ``<name>.safetensors``:
- tensors ``model/<state_dict key>``, ``optim/<param index>/<key>``, ``rng/<name>``;
- header metadata ``{"format": "rnnrbm-checkpoint", "format_version": "1", "meta": <JSON>}``
  where the JSON holds the model type and config (so a checkpoint loads without knowing its
  hyper-parameters), the library and torch versions, the training config and state, and the
  optimiser's non-tensor state (param groups, scalar entries).

One file means one atomic ``os.replace``: a write killed midway leaves the previous checkpoint
untouched (the temporary file is written, flushed and fsynced first). Loading never unpickles.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from rnnrbm.files import atomic_write_bytes
from rnnrbm.registry import model_from_config, model_type_of
from rnnrbm.validation import CheckpointError, error_message
from rnnrbm.version import __version__

__all__ = ["Checkpoint", "load_checkpoint", "read_meta", "save_checkpoint"]

FORMAT = "rnnrbm-checkpoint"
FORMAT_VERSION = "1"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (built from its stored config) and everything else."""

    model: torch.nn.Module
    meta: dict[str, Any]
    optimizer_state: dict[str, Any] | None = None
    rng_states: dict[str, torch.Tensor] = field(default_factory=dict)
    path: Path | None = None

    @property
    def train_state(self) -> dict[str, Any] | None:
        return self.meta.get("train_state")

    @property
    def train_config(self) -> dict[str, Any] | None:
        return self.meta.get("train_config")

    @property
    def recipe(self) -> dict[str, Any] | None:
        """The resolved recipe of the run that wrote it (``recipes.Recipe.from_dict``)."""
        return self.meta.get("recipe")

    @property
    def framing(self) -> dict[str, Any] | None:
        """How its training data were framed: ``dataset``, ``source``, ``frames_per_beat``,
        ``tempo_bpm``, ``transpose_to_c``, ``sustain``, ``lowest_key`` (MIDI number of key 0),
        ``keys``; None in a checkpoint written without it."""
        return self.meta.get("framing")


def _split_optimizer_state(
    state_dict: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors → safetensors entries; everything else → JSON."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in state_dict["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{idx}/{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split("/", 2)
        state.setdefault(int(idx), {})[key] = value
    for idx, entry in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    rng_states: dict[str, torch.Tensor] | None = None,
    train_state: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (+ optional training state) atomically to ``path``; returns the path.

    ``meta`` adds top-level header entries, e.g. ``{"recipe": …, "framing": …}`` (the run's
    resolved recipe and data framing; see :attr:`Checkpoint.recipe`, :attr:`Checkpoint.framing`).
    """
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {
        f"model/{k}": v.detach() for k, v in model.state_dict().items()
    }
    header_meta: dict[str, Any] = {
        **(meta or {}),
        "model_type": model_type_of(model),
        "model_config": model.config(),  # type: ignore[operator]
        "rnnrbm_version": __version__,
        "torch_version": torch.__version__,
        "train_state": train_state,
        "train_config": train_config,
        "extra": extra or {},
    }
    if optimizer is not None:
        opt_tensors, header_meta["optimizer"] = _split_optimizer_state(optimizer.state_dict())
        tensors.update(opt_tensors)
    for name, state in (rng_states or {}).items():
        tensors[f"rng/{name}"] = state
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "meta": json.dumps(header_meta, default=str),
    }
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata=header))
    return path


def _read(path: Path, *, tensors: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors (none unless ``tensors``) and the checked header of a checkpoint file."""
    fix = "pass a checkpoint written by rnnrbm (e.g. <out>/last.safetensors)"
    if not path.is_file():
        raise CheckpointError(
            error_message(f"checkpoint {path}", "an existing file", "no file", fix)
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            header = fh.metadata() or {}
            stored = {k: fh.get_tensor(k) for k in fh.keys()} if tensors else {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            error_message(
                f"checkpoint {path}",
                "a complete safetensors file",
                f"an unreadable file ({exc})",
                "the file is truncated or not a checkpoint; " + fix,
            )
        ) from exc
    if header.get("format") != FORMAT:
        raise CheckpointError(
            error_message(
                f"checkpoint {path}",
                f"header format {FORMAT!r}",
                f"{header.get('format')!r} (a foreign safetensors file)",
                fix,
            )
        )
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            error_message(
                f"checkpoint {path}",
                f"format version {FORMAT_VERSION}",
                repr(header.get("format_version")),
                "load it with the rnnrbm version that wrote it",
            )
        )
    return stored, header


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON metadata of a checkpoint (recipe, framing, configs, state) without reading its
    tensors or building its model."""
    path = Path(path)
    header = _read(path, tensors=False)[1]
    try:
        meta = json.loads(header["meta"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            error_message(f"checkpoint {path}", "JSON metadata", repr(exc), "re-save it")
        ) from exc
    return meta if isinstance(meta, dict) else {}


def load_checkpoint(
    path: str | os.PathLike[str], *, device: str | torch.device | None = None
) -> Checkpoint:
    """Rebuild the model from the stored config and load its tensors (never unpickles)."""
    path = Path(path)
    tensors, header = _read(path)
    try:
        meta = json.loads(header["meta"])
        model = model_from_config(meta["model_type"], meta["model_config"])
        state = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
        model.load_state_dict(state)
    except (KeyError, json.JSONDecodeError, RuntimeError, TypeError) as exc:
        raise CheckpointError(
            error_message(
                f"checkpoint {path}",
                "a model type, config and tensors that match",
                f"{type(exc).__name__}: {exc}",
                "the file was written by an incompatible version or edited; retrain or re-save",
            )
        ) from exc
    if device is not None:
        model.to(device)
    optim_tensors = {k: v for k, v in tensors.items() if k.startswith("optim/")}
    optimizer_state = (
        _join_optimizer_state(optim_tensors, meta["optimizer"]) if "optimizer" in meta else None
    )
    rng = {k[len("rng/") :]: v for k, v in tensors.items() if k.startswith("rng/")}
    return Checkpoint(model, meta, optimizer_state, rng, path)
