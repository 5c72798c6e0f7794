"""The bundled recipes (``recipes/bundled/*.toml``, one per published results row) and the
rule that picks a default recipe for a model and a dataset."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from rnnrbm.data.polyphonic import DATASETS
from rnnrbm.recipes.schema import MODEL_TYPES, Recipe
from rnnrbm.validation import InputError, error_message

__all__ = ["bundled_names", "default_recipe", "load", "resolve"]

GENERAL_MAX_LEN = 100  # chunks for data without a recipe of its own: bounded memory per batch


def _folder() -> Path:
    return Path(str(resources.files("rnnrbm.recipes").joinpath("bundled")))


def bundled_names() -> list[str]:
    """Names of the bundled recipes, sorted."""
    return sorted(p.stem for p in _folder().glob("*.toml"))


def load(name_or_path: str | Path) -> Recipe:
    """A bundled recipe by name (``"jsb-rnn-rbm"``) or a recipe TOML file by path."""
    text = str(name_or_path)
    if text.endswith(".toml") or Path(text).is_file():
        return Recipe.from_toml(text)
    path = _folder() / f"{text}.toml"
    if not path.is_file():
        raise InputError(
            error_message(
                "recipe",
                f"a bundled recipe ({', '.join(bundled_names())}) or a .toml file",
                repr(text),
                "pick one of those (`rnnrbm recipes` lists them)",
            )
        )
    return Recipe.from_toml(path)


def resolve(recipe: Recipe | str | Path) -> Recipe:
    return recipe if isinstance(recipe, Recipe) else load(recipe)


def _dataset_key(source: str) -> str | None:
    """The benchmark short name of a data source (``"jsb"``, …), None for other data."""
    s = source.lower()
    for short, stem in DATASETS.items():
        if s in (short, stem):
            return short
    return None


def default_recipe(model: str, source: str) -> Recipe:
    """The best known settings for ``model`` on ``source``.

    The bundled ``<dataset>-<model>`` recipe when there is one; otherwise the model's JSB
    recipe with the data swapped, cut into chunks of ``GENERAL_MAX_LEN`` frames (long pieces
    such as MIDI files or Piano-midi.de then train in bounded memory), measured figures cleared.
    """
    if model not in MODEL_TYPES:
        raise InputError(
            error_message("model", f"one of {', '.join(MODEL_TYPES)}", repr(model), "pick one")
        )
    key = _dataset_key(source)
    if key is not None and f"{key}-{model}" in bundled_names():
        return load(f"{key}-{model}").override({"data.source": source})
    base = load(f"jsb-{model}")
    return base.with_expected_cleared().override(
        {
            "name": f"{model} on {source}",
            "data.source": source,
            "data.frames_per_beat": 0,
            "data.max_len": GENERAL_MAX_LEN,
        }
    )
