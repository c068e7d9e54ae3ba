"""Every shipped recipe names a real task, backbone and options: a typo must fail here, in a
second, not after a benchmark has loaded its data."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from selfsup.backbones import _OPTIONS as BACKBONE_OPTIONS
from selfsup.engine import TrainConfig
from selfsup.errors import SelfSupError
from selfsup.recipe import EVALUATE_KEYS, Recipe, build_data, load_recipe, save_recipe, set_option
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
    recipe.check()  # types, ranges, evaluate keys, backbone for the task


def test_scientific_notation_is_a_number_in_recipes_and_set(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "task: simclr\ntask_options: {temperature: 1E+2}\n"
        "train: {lr: 1e-3, weight_decay: 5e-4, momentum: -2e-1, steps: 1.0e3}\n"
    )
    recipe = load_recipe(path)
    assert recipe.train == {"lr": 0.001, "weight_decay": 0.0005, "momentum": -0.2, "steps": 1000.0}
    assert recipe.task_options == {"temperature": 100.0}
    set_option(recipe, "train.lr=5e-4")
    set_option(recipe, "task_options.temperature=-2e-1")
    assert recipe.train["lr"] == 0.0005 and recipe.task_options["temperature"] == -0.2
    # A string that looks like one is quoted in run.yaml, so it comes back a string.
    recipe.data = "1e5"
    save_recipe(recipe, tmp_path / "run")
    assert load_recipe(tmp_path / "run" / "run.yaml").data == "1e5"


def test_evaluate_section_is_validated():
    from selfsup.text.evaluate import FINETUNE

    assert set(EVALUATE_KEYS) == {"data", "retrieval", *FINETUNE}  # what text runs read
    Recipe(task="mlm", data="text:a.txt", evaluate={"data": "tsv:a,b", "lr": 1e-4}).check()
    Recipe(task="simclr", evaluate={"data": "folder:imgs"}).check()
    with pytest.raises(SelfSupError, match=r"unknown evaluate option\(s\) lables for a text run"):
        Recipe(task="mlm", data="text:a.txt", evaluate={"lables": "10%"}).check()
    with pytest.raises(SelfSupError, match="protocl for an image run; valid: data$"):
        Recipe(task="simclr", evaluate={"data": "folder:imgs", "protocl": "knn"}).check()
    with pytest.raises(SelfSupError, match="lr for an image run"):  # a text-only setting
        Recipe(task="simclr", evaluate={"lr": 0.1}).check()
    with pytest.raises(SelfSupError, match="evaluate.epochs must be a whole number, got 2.5"):
        Recipe(task="mlm", data="text:a.txt", evaluate={"epochs": 2.5}).check()
    with pytest.raises(SelfSupError, match="tsv:a,b is text data, but simclr learns from image"):
        Recipe(task="simclr", evaluate={"data": "tsv:a,b"}).check()
    with pytest.raises(SelfSupError, match="folder:x is image data, but mlm learns from text"):
        Recipe(task="mlm", data="text:a.txt", evaluate={"data": "folder:x"}).check()


def test_text_data_for_an_image_run_names_the_text_tasks(tmp_path):
    with pytest.raises(SelfSupError, match="tsv is text data, for the text tasks .*mlm"):
        build_data(Recipe(task="simclr"), "train", spec=f"tsv:{tmp_path / 'a.tsv'}")


def test_a_binary_recipe_or_run_yaml_is_a_one_line_error(tmp_path):
    """A recipe (or a run's run.yaml) that is not UTF-8 text once gave a UnicodeDecodeError
    traceback."""
    path = tmp_path / "run.yaml"
    path.write_bytes(b"\xff\xfe\x00task: simclr\n")
    with pytest.raises(SelfSupError, match=r"recipe .*run\.yaml is not valid YAML: 'utf-8'"):
        load_recipe(path)
