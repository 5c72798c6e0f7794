"""The name map from model type to class, used by checkpoints and the CLI.

Every model class exposes ``model_type`` (its name here), ``config() -> dict`` (JSON-able
constructor arguments) and ``from_config(dict)``; that is all a checkpoint needs to rebuild it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import torch

from rnnrbm.validation import InputError, error_message

__all__ = ["MODEL_TYPES", "model_from_config", "model_type_of", "register_model"]


class ConfigurableModel(Protocol):
    model_type: str

    def config(self) -> dict[str, Any]: ...

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> torch.nn.Module: ...


MODEL_TYPES: dict[str, Any] = {}
T = TypeVar("T")


def register_model(name: str) -> Callable[[T], T]:
    """Class decorator: make a model loadable by name."""

    def deco(cls: T) -> T:
        cls.model_type = name  # type: ignore[attr-defined]
        MODEL_TYPES[name] = cls
        return cls

    return deco


def model_type_of(model: torch.nn.Module) -> str:
    name = getattr(model, "model_type", None)
    if name not in MODEL_TYPES:
        raise InputError(
            error_message(
                "model",
                f"a registered rnnrbm model ({', '.join(sorted(MODEL_TYPES))})",
                type(model).__name__,
                "decorate the class with @register_model(name)",
            )
        )
    return name


def model_from_config(name: str, config: dict[str, Any]) -> torch.nn.Module:
    if name not in MODEL_TYPES:
        raise KeyError(f"unknown model type {name!r}; known: {sorted(MODEL_TYPES)}")
    return MODEL_TYPES[name].from_config(config)
