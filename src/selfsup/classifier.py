"""The classifier a user keeps: a run's backbone fine-tuned on their labelled images, saved
beside its head and class names, and used to label new images.

`selfsup evaluate` answers how much pretraining buys over training on the few labels alone;
`selfsup finetune` then trains the model to keep (the same fine-tuning as evaluate's finetune
rows, on all the labels given), and `selfsup predict` applies it. The folder holds the
backbone as save_backbone writes it, `head.safetensors` and `classifier.json` (classes and
held-out accuracy), written last, so a folder without it is an unfinished save.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from selfsup.errors import NoTestSplit, SelfSupError

FORMAT = "selfsup-classifier/1"
DESCRIPTION = "classifier.json"
HEAD = "head.safetensors"


class Classifier(nn.Module):
    """A backbone and a linear head over its features; `classes` names the head's outputs.

    Takes what the backbone takes: float (B, C, S, S) images in [0, 1]
    (selfsup.prepare_images(files, classifier.backbone.config) makes them).
    """

    def __init__(self, backbone: nn.Module, head: nn.Linear, classes: list[str]) -> None:
        super().__init__()
        if head.out_features != len(classes):
            raise SelfSupError(
                f"the head has {head.out_features} outputs but {len(classes)} classes are named"
            )
        self.backbone, self.head, self.classes = backbone, head, list(classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        """(the likeliest class of each image, the (B, classes) probabilities)."""
        probabilities = self(images).float().softmax(dim=1)
        return [self.classes[i] for i in probabilities.argmax(1).tolist()], probabilities


def save_classifier(classifier: Classifier, folder: str | Path, info: dict[str, Any]) -> Path:
    """Write the classifier to `folder` (backbone, head, then classifier.json); returns it."""
    from selfsup.backbones import save_backbone
    from selfsup.evaluate.report import atomic_write

    folder = Path(folder)
    save_backbone(classifier.backbone, folder, extra={"fine_tuned_for": DESCRIPTION})
    head = {k: v.detach().cpu().contiguous() for k, v in classifier.head.state_dict().items()}
    atomic_write(folder / HEAD, save(head, {"format": FORMAT}))
    description = {"format": FORMAT, "classes": classifier.classes, **info}
    atomic_write(folder / DESCRIPTION, json.dumps(description, indent=2) + "\n")
    return folder


def read_classifier_description(folder: str | Path) -> dict[str, Any]:
    """The parsed classifier.json of a saved classifier, or a one-line error saying why not."""
    folder = Path(folder)
    file = folder / DESCRIPTION
    if not file.is_file():
        if (folder / "backbone.json").is_file() or (folder / "backbone").is_dir():
            raise SelfSupError(
                f"{folder} holds a backbone but no {DESCRIPTION}: it is a pretraining run or an "
                "unfinished save; make a classifier with `selfsup finetune RUN --data "
                "folder:LABELLED --out DIR`"
            )
        raise SelfSupError(
            f"no {DESCRIPTION} in {folder}; give a folder written by `selfsup finetune`"
        )
    try:
        description = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SelfSupError(f"{file} is not valid JSON ({error}); fine-tune again") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise SelfSupError(f"{file} is not a {FORMAT} description; fine-tune again")
    return description


def load_classifier(folder: str | Path, *, check_inputs: bool = True) -> Classifier:
    """A classifier saved by `selfsup finetune` (or save_classifier), in eval mode."""
    from selfsup.backbones import load_backbone

    folder = Path(folder)
    classes = read_classifier_description(folder)["classes"]
    backbone = load_backbone(folder, check_inputs=check_inputs)
    try:
        weights = load_file(str(folder / HEAD), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise SelfSupError(
            f"{folder / HEAD} is missing or corrupt ({error}); fine-tune again"
        ) from None
    head = nn.Linear(int(backbone.feature_dim), len(classes))
    try:
        head.load_state_dict(weights, strict=True)
    except RuntimeError:
        raise SelfSupError(
            f"{folder / HEAD} does not fit {len(classes)} classes over {backbone.feature_dim} "
            f"features; the files come from different saves: fine-tune again"
        ) from None
    return Classifier(backbone, head, classes).eval()


def finetune_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    data: str | None = None,
    freeze_stages: int = 0,
    steps: int | None = None,
    epochs: int | None = None,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune the run's backbone with a linear head on the train split of `data` (default:
    the recipe's evaluate.data, else its own data), measure it on the test split, and save the
    classifier to `out`. `freeze_stages` keeps the lowest stages as pretrained; freezing all
    of them trains the head alone. Returns what classifier.json records."""
    from selfsup.evaluate.finetune import finetune
    from selfsup.evaluate.labels import require_two_classes
    from selfsup.recipe import check_value
    from selfsup.runs import (
        backbone_data,
        load_run_data,
        note_partial_run,
        resolve_device,
        run_backbone,
    )
    from selfsup.text.corpus import is_text_spec

    for name, value in (("seed", seed), ("freeze_stages", freeze_stages),
                        ("batch_size", batch_size)):  # fmt: skip
        check_value(name, value, "int")
    for name, value in (("steps", steps), ("epochs", epochs)):
        check_value(name, value, "int | None")
        if value is not None and value < 1:
            raise SelfSupError(f"{name} must be at least 1, got {value}")
    if steps is not None and epochs is not None:
        raise SelfSupError("give steps or epochs, not both")
    check_value("lr", lr, "float")
    if not lr > 0:
        raise SelfSupError(f"lr must be above 0, got {lr}")
    out = Path(out)
    if (out / DESCRIPTION).exists():
        raise SelfSupError(f"{out} already holds a classifier; pick another --out or delete it")
    if out.exists() and not out.is_dir():
        raise SelfSupError(f"--out {out} is a file; give a directory for the classifier")
    run_dir = Path(run_dir)
    recipe = load_run_data(run_dir, note=data is None)
    data = data or recipe.evaluate.get("data")
    kind = (data or recipe.data).partition(":")[0]
    if is_text_spec(recipe.data) or kind in ("moving-mnist", "video"):
        what = "text" if is_text_spec(recipe.data) else "clips"
        raise SelfSupError(
            f"finetune and predict keep image classifiers; {data or recipe.data} is {what}. "
            f"`selfsup evaluate {run_dir} --protocol finetune` measures fine-tuning on {what}"
        )
    device = resolve_device(device)
    backbone = run_backbone(run_dir)
    pretrained = note_partial_run(run_dir, "fine-tuning")
    train, test = (backbone_data(recipe, split, data, backbone) for split in ("train", "test"))
    for split, dataset in (("train", train), ("test", test)):
        if not dataset.has_labels:
            raise SelfSupError(
                f"{data or recipe.data} ({split} split) has unlabeled images; fine-tuning needs "
                "labels (for an image folder: one sub-folder per class)"
            )
    require_two_classes(train.labels, data or recipe.data, "label images of two classes or more")
    result = finetune(
        backbone, train, test, freeze_stages=freeze_stages, steps=steps, epochs=epochs,
        lr=lr, batch_size=batch_size, seed=seed, device=device,
        progress="fine-tuning" if progress else None,
    )  # fmt: skip
    classes = (
        [str(c) for c in train.classes]
        if train.classes
        else [str(i) for i in range(result.head.out_features)]
    )
    classifier = Classifier(result.backbone.cpu(), result.head.cpu(), classes)
    info = {
        "test_accuracy": result.accuracy,
        "test_images": len(test),
        "train_images": len(train),
        "steps": result.steps,
        "freeze_stages": freeze_stages,
        "lr": lr,
        "seed": seed,
        "run": str(run_dir.resolve()),
        "pretraining_steps": pretrained.get("steps"),
        "data": data or recipe.data,
    }
    save_classifier(classifier, out, info)
    return {"classes": classes, **info}


# Clip tasks: their backbones read frames, and a clip's labels are several digits at once.
_CLIP_TASKS = ("frame_order", "odd_one_out", "future_frame", "dpc")


def predict(
    classifier_dir: str | Path,
    data: str,
    out: str | Path,
    *,
    split: str = "all",
    device: str = "auto",
    batch_size: int = 256,
) -> dict[str, Any]:
    """Label every image of `data` with a saved classifier and write a CSV: file (or index),
    the predicted class, its probability, each class's probability, and the true label where
    the data has one. `split="all"`: the train split, then the test split where there is one.
    Returns {"rows", "path", "accuracy" (None without labels)}."""
    from selfsup.data.base import UNLABELED
    from selfsup.evaluate.features import iterate_batches
    from selfsup.evaluate.report import atomic_write
    from selfsup.recipe import Recipe, build_data, match_channels
    from selfsup.runs import resolve_device

    if split not in ("train", "test", "all"):
        raise SelfSupError(f"predict: split must be train, test or all, got {split!r}")
    out = Path(out)
    if out.is_dir():
        raise SelfSupError(f"--out {out} is a directory; give the .csv file to write")
    device = resolve_device(device)
    classifier = load_classifier(classifier_dir, check_inputs=False).to(device)
    config = classifier.backbone.config
    spec = Recipe(data=data, image_size=int(config["image_size"]))
    header = ["split", "index", "label", "file", "predicted", "probability"]
    rows, right, labelled = [], 0, 0
    for part in ("train", "test") if split == "all" else (split,):
        try:
            dataset = match_channels(build_data(spec, part), int(config["in_channels"]))
        except NoTestSplit as error:
            if split == "all":
                break  # all of this data is its train split
            raise NoTestSplit(
                f"{data} has no test split ({error}); use --split train or all"
            ) from None
        paths = getattr(dataset, "paths", None)
        names = getattr(dataset, "classes", None)
        index = 0
        for images, labels in iterate_batches(dataset, batch_size):
            x = images.to(device).float().div_(255)
            predicted, probabilities = classifier.predict(x)
            for label, name, p in zip(labels.tolist(), predicted, probabilities.cpu(),
                                      strict=True):  # fmt: skip
                truth = "" if label == UNLABELED else names[label] if names else str(label)
                if truth:
                    labelled += 1
                    right += truth == name
                file = str(paths[index]) if paths is not None else ""
                best = float(p.max())
                rows.append([part, index, truth, file, name, f"{best:.4f}",
                             *(f"{v:.4f}" for v in p.tolist())])  # fmt: skip
                index += 1
    header += [f"p({c})" for c in classifier.classes]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, buffer.getvalue())
    accuracy = right / labelled if labelled else None
    return {"rows": len(rows), "path": out, "accuracy": accuracy, "labelled": labelled}
