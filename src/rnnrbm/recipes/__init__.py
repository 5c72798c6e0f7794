"""Recipes: every setting of a training run in one typed, validated, TOML-backed tree.

    from rnnrbm import recipes
    recipe = recipes.load("jsb-rnn-rbm")                  # bundled name or a .toml path
    recipe = recipe.override({"stages.sequence.epochs": 20})
    result = recipes.run(recipe, out="runs/jsb")          # -> RunResult (model, history, paths)

``schema`` defines the tree, ``catalog`` the bundled recipes (one per published results row)
and the default for a model and dataset, ``stages`` the paper's training stages, ``runner``
the run itself.
"""

from rnnrbm.recipes.catalog import bundled_names, default_recipe, load, resolve
from rnnrbm.recipes.runner import RunResult, run
from rnnrbm.recipes.schema import Recipe

__all__ = ["Recipe", "RunResult", "bundled_names", "default_recipe", "load", "resolve", "run"]
