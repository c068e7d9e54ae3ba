"""Recipes: one YAML file (or dict) says which data, task, backbone and budget a run uses.

A run directory keeps the resolved recipe as run.yaml, so `evaluate`, `embed` and `--resume`
rebuild exactly what was trained without the user repeating themselves.
"""

from __future__ import annotations

import inspect
import os
import re
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from selfsup.errors import SelfSupError

RUN_FILE = "run.yaml"
# The keys of a recipe's `evaluate:` mapping. Image runs read only `data`; the rest are the
# text fine-tuning budget (selfsup.text.evaluate.FINETUNE) and the retrieval files.
EVALUATE_KEYS: dict[str, str] = {
    "data": "str",
    "retrieval": "str",
    "batch_size": "int",
    "lr": "float",
    "scratch_lr": "float",
    "epochs": "int",
    "max_steps": "int",
}
IMAGE_EVALUATE_KEYS = ("data",)
# YAML 1.1 (PyYAML) reads 1e-3 and 1.0e3 as strings: it wants a dot and a signed exponent.
# Recipes and --set read them as numbers, as YAML 1.2 and Python do.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
_KINDS = {
    "int": "a whole number",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "None": "null",
}


@dataclass
class Recipe:
    """Everything needed to rebuild a pretraining run."""

    task: str = "simclr"
    task_options: dict[str, Any] = field(default_factory=dict)
    backbone: str | None = None  # None: the task's own default (default_backbone)
    backbone_options: dict[str, Any] = field(default_factory=dict)
    data: str = "digits"
    image_size: int | None = None  # resize every image to this square size
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields
    evaluate: dict[str, Any] = field(default_factory=dict)  # defaults for `selfsup evaluate`
    text: dict[str, Any] = field(default_factory=dict)  # text data + tokenizer (docs/text.md)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "recipe") -> Recipe:
        known = set(inspect.signature(cls).parameters)
        unknown = sorted(set(values) - known)
        if unknown:
            raise SelfSupError(
                f"{source}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def backbone_name(self) -> str:
        """The backbone this recipe builds: the one it names, else its task's default."""
        return self.backbone if self.backbone is not None else default_backbone(self.task)

    def check(self) -> None:
        """Refuse a value of the wrong type or range, one line naming the key, before any data
        is read or output written. Task and backbone options are checked as they are built."""
        from selfsup.engine import TrainConfig
        from selfsup.tasks import TEXT_TASKS

        for name in ("task", "data"):
            check_value(name, getattr(self, name), "str")
        check_value("backbone", self.backbone, "str | None")
        check_value("image_size", self.image_size, "int | None")
        if self.image_size is not None and self.image_size < 1:
            raise SelfSupError(f"image_size must be at least 1, got {self.image_size}")
        for name in ("task_options", "backbone_options", "train", "evaluate", "text"):
            value = getattr(self, name)
            if not isinstance(value, dict):
                raise SelfSupError(
                    f"{name} must be a mapping (e.g. {name}: {{key: value}}), got {value!r}"
                )
        TrainConfig.from_dict(self.train)
        text = self.task in TEXT_TASKS
        valid = tuple(EVALUATE_KEYS) if text else IMAGE_EVALUATE_KEYS
        unknown = sorted(set(self.evaluate) - set(valid))
        if unknown:
            kind = "a text" if text else "an image"
            raise SelfSupError(
                f"unknown evaluate option(s) {', '.join(unknown)} for {kind} run; "
                f"valid: {', '.join(valid)}"
            )
        for key, value in self.evaluate.items():
            check_value(f"evaluate.{key}", value, EVALUATE_KEYS[key])
        if self.evaluate.get("data"):
            from selfsup.text.corpus import is_text_spec

            if is_text_spec(self.evaluate["data"]) != text:
                kind, given = ("text", "image") if text else ("image", "text")
                raise SelfSupError(
                    f"evaluate.data {self.evaluate['data']} is {given} data, but {self.task} "
                    f"learns from {kind} data: evaluate it on labelled {kind} data"
                )
        check_backbone_fits_task(self.task, self.backbone_name)


def default_backbone(task: str) -> str:
    """What a recipe that names no backbone builds for `task`."""
    from selfsup.tasks import TEXT_TASKS

    if task == "word2vec":
        return "word_vectors"
    return "transformer" if task in TEXT_TASKS else "small_cnn"


def check_value(key: str, value: Any, annotation: str) -> None:
    """Refuse `value` unless it fits `annotation` ("int", "float | None", ...): an int must be
    an int (2.5 is not a step count), an int is fine where a float is wanted, and true/false
    are not numbers."""
    allowed = [part.strip() for part in annotation.split("|")]
    for kind in allowed:
        if kind == "None" and value is None:
            return
        if kind == "bool" and isinstance(value, bool):
            return
        if kind == "str" and isinstance(value, str):
            return
        if isinstance(value, bool):
            continue
        if kind == "int" and isinstance(value, int):
            return
        if kind == "float" and isinstance(value, (int, float)):
            return
    expected = " or ".join(_KINDS[kind] for kind in allowed)
    raise SelfSupError(f"{key} must be {expected}, got {value!r}")


def check_backbone_fits_task(task: str, backbone: str) -> None:
    """Text tasks take text backbones, image and video tasks image ones."""
    from selfsup.backbones import IMAGE_BACKBONES, TEXT_BACKBONES
    from selfsup.tasks import TASKS, TEXT_TASKS

    if task not in TASKS or backbone not in (*IMAGE_BACKBONES, *TEXT_BACKBONES):
        return  # unknown names get their own message, with the choices, where they are used
    if task in TEXT_TASKS and backbone not in TEXT_BACKBONES:
        raise SelfSupError(
            f"task {task} learns from text and needs a text backbone "
            f"({', '.join(TEXT_BACKBONES)}), got {backbone}; leave the backbone out for the "
            f"task's default, {default_backbone(task)}"
        )
    if task not in TEXT_TASKS and backbone in TEXT_BACKBONES:
        raise SelfSupError(
            f"task {task} learns from images; backbone {backbone} is for the text tasks "
            f"({', '.join(TEXT_TASKS)}): use one of {', '.join(IMAGE_BACKBONES)}"
        )


def yaml_load(text: str) -> Any:
    """YAML as recipes and --set read it: PyYAML's safe loader, plus 1e-3 as a number."""
    import yaml

    return yaml.load(text, Loader=_with_exponent_floats(yaml.SafeLoader))


@cache
def _with_exponent_floats(base: type) -> type:
    """A PyYAML loader or dumper class that reads 1e-3 as a number. The dumper needs the same
    resolver to quote a string such as "1e-3", which would otherwise come back from run.yaml
    as a number."""

    class WithExponentFloats(base):
        pass

    WithExponentFloats.add_implicit_resolver(
        "tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789.")
    )
    return WithExponentFloats


def load_recipe(path: str | Path) -> Recipe:
    """Read a YAML recipe, with errors that name the file."""
    return Recipe.from_dict(read_recipe(path), source=str(path))


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML recipe file holds (the keys it sets, before any defaults)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SelfSupError(f"recipe {path} not found; see the recipes/ folder for examples")
    try:
        values = yaml_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:  # a binary or damaged file too
        raise SelfSupError(
            f"recipe {path} is not valid YAML: {error}".replace("\n", " ")
        ) from error
    if not isinstance(values, dict):
        raise SelfSupError(f"recipe {path} must be a YAML mapping (key: value lines)")
    return values


def save_recipe(recipe: Recipe, run_dir: Path) -> None:
    import yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / (RUN_FILE + ".tmp")
    dumper = _with_exponent_floats(yaml.SafeDumper)
    tmp.write_text(yaml.dump(recipe.to_dict(), Dumper=dumper, sort_keys=False))
    os.replace(tmp, run_dir / RUN_FILE)


def load_run(run_dir: str | Path) -> Recipe:
    """The recipe a run directory was trained with."""
    run_dir = Path(run_dir)
    fix = (
        f"put back the recipe it was started with (selfsup pretrain writes every key) as "
        f"{run_dir / RUN_FILE}"
    )
    if not (run_dir / RUN_FILE).is_file():
        if (run_dir / "checkpoints").is_dir():
            raise SelfSupError(f"{run_dir} has checkpoints but no {RUN_FILE}; {fix}")
        raise SelfSupError(
            f"{run_dir} is not a selfsup run (no {RUN_FILE}); pass the --out folder of "
            "`selfsup pretrain`"
        )
    values = read_recipe(run_dir / RUN_FILE)
    # A run's file names its task and data; without them the defaults (SimCLR on digits)
    # would stand in for what was trained.
    missing = [key for key in ("task", "data", "train") if key not in values]
    if missing:
        raise SelfSupError(
            f"{run_dir / RUN_FILE} lacks {', '.join(missing)}: it is damaged or was edited; {fix}"
        )
    return Recipe.from_dict(values, source=str(run_dir / RUN_FILE))


def set_option(recipe: Recipe, assignment: str) -> None:
    """Apply one `--set key.sub=value` override; the value is parsed as YAML (numbers, lists)."""
    import yaml

    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise SelfSupError(f"--set expects key=value (e.g. train.lr=0.01), got {assignment!r}")
    try:
        value = yaml_load(raw)
    except yaml.YAMLError as error:
        raise SelfSupError(
            f"--set {assignment}: not valid YAML ({error.__class__.__name__}); quote text "
            "values, e.g. --set 'key=\"a: b\"'"
        ) from error
    if isinstance(value, dict) and any(":" in str(k) and v is None for k, v in value.items()):
        # YAML reads {size:tiny} as the key "size:tiny" with no value.
        fixed = re.sub(r":(?=\S)", ": ", raw)
        raise SelfSupError(
            f"--set {assignment}: YAML needs a space after each colon: --set '{key}={fixed}'"
        )
    head, _, rest = key.partition(".")
    if head not in recipe.to_dict():
        raise SelfSupError(
            f"--set {key}: unknown key {head!r}; valid: {', '.join(recipe.to_dict())}"
        )
    if not rest:
        setattr(recipe, head, value)
        return
    # task_options.augment.crop_scale=[0.08,1] walks into (and makes) nested mappings.
    target, path = getattr(recipe, head), head
    *parents, leaf = rest.split(".")
    for part in parents:
        if not isinstance(target, dict):
            raise SelfSupError(f"--set {key}: {path} is not a mapping")
        target, path = target.setdefault(part, {}), f"{path}.{part}"
    if not isinstance(target, dict):
        raise SelfSupError(f"--set {key}: {path} is not a mapping")
    target[leaf] = value


def build_data(
    recipe: Recipe, split: str = "train", spec: str | None = None, download: bool = False
):
    """The dataset of a recipe (or of `spec`), resized to the recipe's image size if it has one."""
    from selfsup.data import load_images
    from selfsup.tasks import TEXT_TASKS
    from selfsup.text.corpus import is_text_spec

    if is_text_spec(spec or recipe.data):
        # Else the image loader's "unknown data spec" would list tsv: among the valid kinds.
        kind = (spec or recipe.data).partition(":")[0]
        raise SelfSupError(
            f"{spec or recipe.data}: {kind} is text data, for the text tasks "
            f"({', '.join(TEXT_TASKS)}); this {recipe.task} run is on images: give image "
            "data (folder:DIR, cifar10:DIR, ...)"
        )

    dataset = load_images(
        spec or recipe.data, split, image_size=recipe.image_size, download=download
    )
    return resize_dataset(dataset, recipe.image_size)


def resize_dataset(dataset, image_size: int | None):
    """In-memory datasets are resized once here; lazy ones resize each image as they load it."""
    import torch
    import torch.nn.functional as F

    from selfsup.data.base import TensorImageDataset

    if image_size is None or not isinstance(dataset, TensorImageDataset):
        return dataset
    if dataset.image_shape[1:] == (image_size, image_size):
        return dataset
    resized = F.interpolate(
        dataset.images.float(),
        size=(image_size, image_size),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    images = resized.round().clamp(0, 255).to(torch.uint8)
    return TensorImageDataset(images, dataset.labels, dataset.classes, dataset.name)


def match_channels(dataset, channels: int):
    """The dataset as the `channels`-channel images a backbone takes: gray images are copied
    to RGB, RGB ones become gray (luma), so that a backbone pretrained on MNIST can be
    evaluated on CIFAR-10 or a folder of photos, and the other way round."""
    from selfsup.data.base import ChannelConvertedDataset, TensorImageDataset, convert_channels
    from selfsup.data.video import VideoDataset

    have = dataset.image_shape[0]
    if have == channels:
        return dataset
    if {have, channels} != {1, 3}:
        raise SelfSupError(
            f"{dataset.name} has {have}-channel images but the backbone takes {channels} "
            "channels; only gray (1) and RGB (3) convert into each other"
        )
    if isinstance(dataset, VideoDataset):
        clips = convert_channels(dataset.clips, channels)
        return VideoDataset(
            clips, dataset.clip_labels, dataset.classes, dataset.name, dataset.clip_files
        )
    if type(dataset) is TensorImageDataset:
        images = convert_channels(dataset.images, channels)
        return TensorImageDataset(images, dataset.labels, dataset.classes, dataset.name)
    return ChannelConvertedDataset(dataset, channels)


def build_task(recipe: Recipe, image_shape: tuple[int, int, int], dataset_size: int | None = None):
    """Backbone and task of a recipe, freshly initialised.

    Tasks whose constructor takes `dataset_size` (memory banks: one row per image) get it.
    """
    from selfsup.backbones import build_backbone
    from selfsup.tasks import task_class

    check_backbone_fits_task(recipe.task, recipe.backbone_name)
    channels, height, _ = image_shape
    backbone = build_backbone(
        recipe.backbone_name, in_channels=channels, image_size=height, **recipe.backbone_options
    )
    cls = task_class(recipe.task)
    options = dict(recipe.task_options)
    if "dataset_size" in inspect.signature(cls).parameters:
        options["dataset_size"] = dataset_size
    try:
        return cls(backbone, image_shape, **options)
    except TypeError as error:
        valid = [
            p for p in inspect.signature(cls).parameters if p not in ("backbone", "image_shape")
        ]
        raise SelfSupError(
            f"task {recipe.task}: bad option(s) {recipe.task_options}; valid: {', '.join(valid)}"
        ) from error
