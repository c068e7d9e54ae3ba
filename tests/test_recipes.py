"""Every shipped recipe names a real task, backbone and options: a typo must fail here, in a
second, not after a benchmark has loaded its data."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from selfsup.backbones import _OPTIONS as BACKBONE_OPTIONS
from selfsup.engine import TrainConfig
from selfsup.recipe import load_recipe
from selfsup.tasks import TASKS, task_class
from selfsup.text.build import TEXT_OPTIONS

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


def test_recipes_folder_is_found():
    assert len(RECIPES) > 10


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_keys_are_valid(path):
    recipe = load_recipe(path)
    assert recipe.task in TASKS
    constructor = inspect.signature(task_class(recipe.task)).parameters
    assert set(recipe.task_options) <= set(constructor), sorted(recipe.task_options)
    assert recipe.backbone in BACKBONE_OPTIONS
    assert set(recipe.backbone_options) <= set(BACKBONE_OPTIONS[recipe.backbone])
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(recipe.train) <= train_fields, sorted(set(recipe.train) - train_fields)
    assert set(recipe.text) <= set(TEXT_OPTIONS)
