"""The classifier a user keeps: a run's backbone fine-tuned on their labelled images or
texts, saved beside its head and class names, and used to label new ones.

`selfsup evaluate` answers how much pretraining buys over training on the few labels alone;
`selfsup finetune` then trains the model to keep (the same fine-tuning as evaluate's finetune
rows, on all the labels given), and `selfsup predict` applies it. The folder holds the
backbone as save_backbone writes it, `head.safetensors`, a text classifier's
`tokenizer.json`, and `classifier.json` (kind, classes, held-out accuracy), written last, so
a folder without it is an unfinished save.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
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
PROTOCOLS = ("finetune", "linear")  # as evaluate names them: the head trained with the
# backbone, or evaluate's linear probe on the frozen backbone
KINDS = ("image", "text")  # classifier.json's "kind"; a description without one is image
# What an image fine-tuning takes when the caller leaves lr / batch_size out (a text run's
# come from its recipe: text.evaluate.finetune_settings).
IMAGE_LR, IMAGE_BATCH_SIZE = 1e-3, 256


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


class TextClassifier(Classifier):
    """A text backbone, the tokenizer it was trained with and a linear head over its
    `features` (the [CLS] state of an encoder, the final token's of a decoder, the averaged
    vectors of word2vec); `predict` takes strings.

    `settings` (classifier.json's "text") says how a text becomes tokens: "encoder" ([CLS]
    first) and "max_len" (longer texts are cut), as fine-tuning framed them.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Linear,
        classes: list[str],
        tokenizer: Any,
        settings: dict[str, Any],
    ) -> None:
        super().__init__(backbone, head, classes)
        self.tokenizer, self.settings = tokenizer, dict(settings)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes) of int64 token ids (B, T), [PAD]-padded on the right."""
        return self.head(self.backbone.features(tokens, pool=self.settings.get("pool")))

    def tokenize(self, texts: list[str]):
        """The texts as fine-tuning read them (a LabeledText without labels)."""
        from selfsup.text.data import LabeledText

        encoder, max_len = bool(self.settings["encoder"]), int(self.settings["max_len"])
        return LabeledText.build(list(texts), None, self.tokenizer, max_len, encoder)

    @torch.no_grad()
    def predict(self, texts: list[str]) -> tuple[list[str], torch.Tensor]:  # type: ignore[override]
        """(the likeliest class of each text, the (N, classes) probabilities, on the CPU)."""
        from selfsup.text.finetune import text_logits

        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise SelfSupError("TextClassifier.predict takes a list of strings, one per text")
        if not texts:
            return [], torch.empty(0, len(self.classes))
        device = str(next(self.parameters()).device)
        tokens = self.tokenize(texts)
        logits = text_logits(self.backbone, self.head, tokens, device, self.settings.get("pool"))
        probabilities = logits.softmax(dim=1)
        return [self.classes[i] for i in probabilities.argmax(1).tolist()], probabilities


def save_classifier(classifier: Classifier, folder: str | Path, info: dict[str, Any]) -> Path:
    """Write the classifier to `folder` (backbone, head, a text classifier's tokenizer, then
    classifier.json); returns it."""
    from selfsup.backbones import save_backbone
    from selfsup.evaluate.report import atomic_write

    folder = Path(folder)
    save_backbone(classifier.backbone, folder, extra={"fine_tuned_for": DESCRIPTION})
    head = {k: v.detach().cpu().contiguous() for k, v in classifier.head.state_dict().items()}
    atomic_write(folder / HEAD, save(head, {"format": FORMAT}))
    kind: dict[str, Any] = {"kind": "image"}
    if isinstance(classifier, TextClassifier):
        # The run's own tokenizer, so predict splits new texts into the same token ids.
        classifier.tokenizer.save(folder)
        kind = {"kind": "text", "text": classifier.settings}
    description = {"format": FORMAT, **kind, "classes": classifier.classes, **info}
    atomic_write(folder / DESCRIPTION, json.dumps(description, indent=2) + "\n")
    return folder


def read_classifier_description(folder: str | Path) -> dict[str, Any]:
    """The parsed classifier.json of a saved classifier, or a one-line error saying why not."""
    folder = Path(folder)
    file = folder / DESCRIPTION
    if not folder.is_dir():
        raise SelfSupError(
            f"classifier folder {folder} does not exist; give a folder written by "
            "`selfsup finetune RUN --data ... --out DIR`"
        )
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
    kind = description.setdefault("kind", "image")  # saved before text classifiers existed
    if kind not in KINDS:
        raise SelfSupError(
            f"{file} has kind {kind!r}; this selfsup reads {' and '.join(KINDS)} classifiers"
        )
    if kind == "text" and not isinstance(description.get("text"), dict):
        raise SelfSupError(
            f"{file} is a text classifier without its text settings; fine-tune again"
        )
    return description


def load_classifier(folder: str | Path, *, check_inputs: bool = True) -> Classifier:
    """A classifier saved by `selfsup finetune` (or save_classifier), in eval mode: a
    TextClassifier when it was fine-tuned on texts, else an image Classifier."""
    from selfsup.backbones import load_backbone
    from selfsup.text.tokenizer import TOKENIZER_FILE, load_tokenizer

    folder = Path(folder)
    description = read_classifier_description(folder)
    classes = description["classes"]
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
    if description["kind"] == "image":
        return Classifier(backbone, head, classes).eval()
    if not (folder / TOKENIZER_FILE).is_file():
        raise SelfSupError(
            f"{folder} is a text classifier without its {TOKENIZER_FILE}; fine-tune again"
        )
    tokenizer = load_tokenizer(folder)
    return TextClassifier(backbone, head, classes, tokenizer, description["text"]).eval()


def finetune_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    data: str | None = None,
    protocol: str = "finetune",
    freeze_stages: int = 0,
    steps: int | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune the run's backbone with a linear head on the train split of `data` (default:
    the recipe's evaluate.data, else its own data), measure it on the test split, and save the
    classifier to `out`. `freeze_stages` keeps the lowest stages as pretrained; freezing all
    of them trains the head alone. `lr` and `batch_size` default to 1e-3 and 256 for an image
    run, to the recipe's text fine-tuning settings for a text run (finetune_text_run).
    `protocol="linear"` keeps the backbone as pretrained and fits evaluate's linear probe
    (logistic regression on its frozen features) as the head instead; no training flag
    applies then. Returns what classifier.json records."""
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

    if protocol not in PROTOCOLS:
        raise SelfSupError(f"unknown protocol {protocol!r}; use {' or '.join(PROTOCOLS)}")
    for name, value in (("seed", seed), ("freeze_stages", freeze_stages)):
        check_value(name, value, "int")
    for name, value in (("steps", steps), ("epochs", epochs), ("batch_size", batch_size)):
        check_value(name, value, "int | None")
        if value is not None and value < 1:
            raise SelfSupError(f"{name} must be at least 1, got {value}")
    if steps is not None and epochs is not None:
        raise SelfSupError("give steps or epochs, not both")
    check_value("lr", lr, "float | None")
    if lr is not None and not lr > 0:
        raise SelfSupError(f"lr must be above 0, got {lr}")
    out = Path(out)
    _require_free_out(out)
    run_dir = Path(run_dir)
    recipe = load_run_data(run_dir, note=data is None)
    data = data or recipe.evaluate.get("data")
    if (data or recipe.data).partition(":")[0] in ("moving-mnist", "video"):
        raise SelfSupError(
            f"finetune and predict keep image and text classifiers; {data or recipe.data} is "
            f"clips. `selfsup evaluate {run_dir} --protocol finetune` measures fine-tuning on "
            "clips"
        )
    if is_text_spec(recipe.data):
        return finetune_text_run(
            run_dir, out, recipe, data, protocol=protocol, freeze_stages=freeze_stages,
            steps=steps, epochs=epochs,
            lr=lr, batch_size=batch_size, seed=seed, device=device, progress=progress,
        )  # fmt: skip
    if data and is_text_spec(data):
        raise SelfSupError(
            f"{run_dir} was pretrained on images ({recipe.data}) but {data} is text; fine-tune "
            "a text run on it, or give labelled images (folder:DIR)"
        )
    if protocol == "linear":
        _refuse_training_flags("the linear protocol fits a logistic regression on the frozen "
                               "features (as evaluate's linear probe)", steps=steps,
                               epochs=epochs, lr=lr, batch_size=batch_size,
                               freeze_stages=freeze_stages)  # fmt: skip
    lr = IMAGE_LR if lr is None else lr
    batch_size = IMAGE_BATCH_SIZE if batch_size is None else batch_size
    device = resolve_device(device)
    backbone = run_backbone(run_dir)
    pretrained = note_partial_run(run_dir, "fine-tuning")
    datasets = {}  # at the backbone's image size (backbone_data), as predict reads them
    for split in ("train", "test"):  # train first: a flat folder gets the "needs labels" fix
        datasets[split] = backbone_data(recipe, split, data, backbone)
        if not datasets[split].has_labels:
            raise SelfSupError(
                f"{data or recipe.data} ({split} split) has unlabeled images; fine-tuning needs "
                "labels (for an image folder: one sub-folder per class)"
            )
    train, test = datasets["train"], datasets["test"]
    require_two_classes(train.labels, data or recipe.data, "label images of two classes or more")
    if protocol == "linear":
        model, head, accuracy = _linear_probe_classifier(backbone, train, test, seed, device)
        steps, how = None, "logistic regression on the frozen features (evaluate's linear probe)"
    else:
        result = finetune(
            backbone, train, test, freeze_stages=freeze_stages, steps=steps, epochs=epochs,
            lr=lr, batch_size=batch_size, seed=seed, device=device,
            progress="fine-tuning" if progress else None,
        )  # fmt: skip
        model, head, accuracy, steps = result.backbone, result.head, result.accuracy, result.steps
        how = "AdamW, warm-up then cosine decay, light augmentation (evaluate's fine-tuning)"
    classes = (
        [str(c) for c in train.classes]
        if train.classes
        else [str(i) for i in range(head.out_features)]
    )
    classifier = Classifier(model.cpu(), head.cpu(), classes)
    info = {
        "test_accuracy": accuracy,
        "test_images": len(test),
        "train_images": len(train),
        "image_size": int(train.image_shape[-1]),  # the backbone's: predict resizes to it
        "protocol": protocol,
        "training": how,
        "steps": steps,
        "freeze_stages": freeze_stages if protocol == "finetune" else None,
        "lr": lr if protocol == "finetune" else None,
        "seed": seed,
        "run": str(run_dir.resolve()),
        "pretraining_steps": pretrained.get("steps"),
        "data": data or recipe.data,
    }
    _save(classifier, out, info)
    return {"kind": "image", "classes": classes, **info}


def _refuse_training_flags(why: str, **flags: Any) -> None:
    """One line naming the training flags given where no head is trained by steps."""
    given = ["--" + name.replace("_", "-") for name, value in flags.items() if value]
    if given:
        verb = "does" if len(given) == 1 else "do"
        raise SelfSupError(f"{why}, so {', '.join(given)} {verb} not apply; --data and --device do")


def _linear_probe_classifier(
    backbone: nn.Module, train: Any, test: Any, seed: int, device: str
) -> tuple[nn.Module, nn.Linear, float]:
    """(the backbone as pretrained, evaluate's linear probe on its frozen features as one
    layer, the test accuracy of the two together as predict will compute it)."""
    from selfsup.evaluate import extract_features
    from selfsup.evaluate.linear import fit_linear_probe

    train_x = extract_features(backbone, train, device=device)
    test_x = extract_features(backbone, test, device=device)
    num_classes = len(train.classes) if train.classes else int(train.labels.max()) + 1
    head = fit_linear_probe(train_x, train.labels, num_classes, seed=seed)
    with torch.no_grad():
        predicted = head(test_x).argmax(1)
    # Counted, not averaged in float32: the fraction predict reports for the same images.
    return backbone, head, int((predicted == test.labels).sum()) / len(test)


def _require_free_out(out: Path) -> None:
    """Refuse, before any training, an --out that would overwrite what is not an unfinished
    classifier save: a classifier, a run, a backbone (a run's backbone/ folder) or a file."""
    if (out / DESCRIPTION).exists():
        raise SelfSupError(f"{out} already holds a classifier; pick another --out or delete it")
    if out.exists() and not out.is_dir():
        raise SelfSupError(f"--out {out} is a file; give a directory for the classifier")
    _require_folder_path(out, "--out")
    if (out / "run.yaml").exists():
        raise SelfSupError(f"{out} is a pretraining run; give --out a folder of its own")
    backbone_json = out / "backbone.json"
    if backbone_json.is_file():
        # save_classifier marks its backbone: one without the mark came from elsewhere (the
        # run's own backbone/ folder), and save_backbone would overwrite its weights.
        try:
            extra = json.loads(backbone_json.read_text()).get("extra") or {}
        except (ValueError, AttributeError):
            extra = {}
        if extra.get("fine_tuned_for") != DESCRIPTION:
            raise SelfSupError(
                f"{out} holds a backbone (backbone.json) that fine-tuning would overwrite; "
                "give --out a folder of its own"
            )


def _require_folder_path(path: Path, flag: str) -> None:
    """Fail now, not after the slow work, where a file stands in a folder's place above
    `path` (the folders to write into are made at the save)."""
    existing = next(p for p in path.absolute().parents if p.exists())
    if not existing.is_dir():
        raise SelfSupError(
            f"{flag} {path}: {existing} is a file, not a folder; give a path in a folder"
        )


def _save(classifier: Classifier, out: Path, info: dict[str, Any]) -> None:
    """save_classifier, with a failure to write (no space, no permission) as one line."""
    try:
        save_classifier(classifier, out, info)
    except OSError as error:
        raise SelfSupError(
            f"could not write the classifier to {out} ({error}); give a writable --out"
        ) from None


def finetune_text_run(
    run_dir: Path,
    out: Path,
    recipe: Any,
    data: str | None,
    *,
    protocol: str,
    freeze_stages: int,
    steps: int | None,
    epochs: int | None,
    lr: float | None,
    batch_size: int | None,
    seed: int,
    device: str,
    progress: bool,
) -> dict[str, Any]:
    """finetune_run for a text run (its arguments checked there): the training of evaluate's
    "ssl finetune" rows on every labelled text of the train split, with evaluate's budget
    (finetune_settings: batch size, lr, epochs capped at max_steps) unless `steps`, `epochs`,
    `lr` or `batch_size` say otherwise; `protocol="linear"`, and every word2vec run, get
    evaluate's "ssl linear" instead (logistic regression on the mean-pooled frozen features)."""
    from selfsup.evaluate.finetune import first_stages
    from selfsup.runs import note_partial_run, resolve_device, run_backbone
    from selfsup.text.build import labeled_splits, text_framing, text_options
    from selfsup.text.corpus import is_text_spec
    from selfsup.text.evaluate import finetune_settings, labelled_default
    from selfsup.text.finetune import (
        budget_steps,
        fit_logistic_regression,
        logistic_regression_layer,
        text_accuracy,
        text_features,
        train_text_classifier,
    )
    from selfsup.text.tokenizer import load_tokenizer

    data = data or labelled_default(recipe)
    if not data:
        raise SelfSupError(
            f"{recipe.data} has no labels to fine-tune on; give labelled texts with --data "
            "tsv:TRAIN,TEST (or csv:TRAIN,TEST), or set evaluate.data in the recipe"
        )
    if not is_text_spec(data):
        raise SelfSupError(
            f"{run_dir} is a text run ({recipe.task}) but {data} is not text; give labelled "
            "texts with --data tsv:TRAIN,TEST (or csv:TRAIN,TEST)"
        )
    # Evaluation keeps word vectors frozen (their only protocol is the linear one): tuning a
    # vocabulary-sized table on a few labels moves only the words those labels contain. The
    # classifier kept is that protocol's: logistic regression on the averaged vectors, as one
    # linear layer, so no step count, learning rate or batch size applies.
    word_vectors = recipe.backbone_name == "word_vectors"
    frozen_only = word_vectors or protocol == "linear"
    if frozen_only:
        why = (
            f"{run_dir} is a word2vec run: its classifier is logistic regression on the frozen "
            "averaged vectors (as evaluate scores it)"
            if word_vectors
            else "the linear protocol fits a logistic regression on the frozen features (as "
            "evaluate's linear probe)"
        )
        _refuse_training_flags(why, steps=steps, epochs=epochs, lr=lr, batch_size=batch_size,
                               freeze_stages=freeze_stages)  # fmt: skip
    device = resolve_device(device)
    tokenizer, backbone = load_tokenizer(run_dir), run_backbone(run_dir)
    first_stages(backbone, freeze_stages)  # too many stages: an error before the slow work
    pretrained = note_partial_run(run_dir, "fine-tuning")
    train, test = labeled_splits(data, recipe, tokenizer, backbone)
    for note in (*train.notes, *test.notes):
        print(f"note: {note}", file=sys.stderr)
    settings = finetune_settings(recipe)
    if frozen_only:
        train_x = text_features(backbone, train, device)
        head = logistic_regression_layer(fit_logistic_regression(train_x, train.labels))
        model, head = backbone, head.to(device)
        how = "logistic regression on the frozen mean-pooled features (evaluate's linear probe)"
    else:
        batch_size = settings["batch_size"] if batch_size is None else batch_size
        lr = settings["lr"] if lr is None else lr
        if steps is None:
            steps = (
                math.ceil(epochs * len(train) / batch_size)
                if epochs is not None
                else budget_steps(len(train), batch_size, settings["epochs"], settings["max_steps"])
            )
        model, head = train_text_classifier(
            backbone, train, test, steps=steps, batch_size=batch_size, lr=lr,
            freeze_stages=freeze_stages, seed=seed, device=device,
            progress="fine-tuning" if progress else None,
        )  # fmt: skip
        how = "AdamW, 10% warm-up then linear decay (evaluate's text fine-tuning)"
    # Scored by the very layers saved, so predict on this test split gives this number.
    pool = "mean" if frozen_only else None  # what the head was fitted on: text_features'
    accuracy = text_accuracy(model, head, test, device, pool)
    encoder, max_len = text_framing(model)
    opts = text_options(recipe)
    if word_vectors:
        features = "averaged word vectors"
    elif frozen_only:
        features = "mean of the final states"
    else:
        features = "[CLS] state" if encoder else "final token's state"
    text_settings = {
        "encoder": encoder,
        "max_len": max_len,
        "features": features,
        "pool": pool,
        "text_column": opts["text_column"],
        "label_column": opts["label_column"],
        "tokenizer": f"{tokenizer.kind} ({tokenizer.vocab_size} tokens)",
    }
    classifier = TextClassifier(model.cpu(), head.cpu(), train.classes, tokenizer, text_settings)
    info = {
        "test_accuracy": accuracy,
        "test_texts": len(test),
        "train_texts": len(train),
        "protocol": "linear" if frozen_only else "finetune",
        "training": how,
        "steps": steps,
        "batch_size": batch_size,
        "freeze_stages": len(backbone.stages()) if frozen_only else freeze_stages,
        "lr": lr,
        "seed": seed,
        "run": str(run_dir.resolve()),
        "task": recipe.task,
        "pretraining_steps": pretrained.get("steps"),
        "data": data,
    }
    _save(classifier, out, info)
    return {"kind": "text", "classes": list(train.classes), **info}


def predict(
    classifier_dir: str | Path,
    data: str,
    out: str | Path,
    *,
    split: str = "all",
    device: str = "auto",
    batch_size: int = 256,
) -> dict[str, Any]:
    """Label every image or text of `data` with a saved classifier and write a CSV: split,
    index, the true label where the data has one, the file (a text classifier: the text, its
    first 200 characters), the predicted class, its probability and each class's probability.
    A text classifier takes tsv:/csv: tables (a label column is optional) and text:FILE (one
    text per non-empty line). `split="all"`: the train split, then the test split where there
    is one. Returns {"kind", "rows", "path", "accuracy" (None without labels), "labelled",
    "classes" (the classifier's), "unknown_labels" (the data's labels that are none of
    them)}."""
    from selfsup.evaluate.report import atomic_write
    from selfsup.runs import resolve_device
    from selfsup.text.corpus import is_text_spec

    if split not in ("train", "test", "all"):
        raise SelfSupError(f"predict: split must be train, test or all, got {split!r}")
    out = Path(out)
    if out.is_dir():
        raise SelfSupError(f"--out {out} is a directory; give the .csv file to write")
    _require_folder_path(out, "--out")
    device = resolve_device(device)
    classifier = load_classifier(classifier_dir, check_inputs=False).to(device)
    text = isinstance(classifier, TextClassifier)
    if text != is_text_spec(data):
        want = "texts: text:FILE, tsv:FILE or csv:FILE" if text else "images, e.g. folder:DIR"
        raise SelfSupError(
            f"{classifier_dir} is {'a text' if text else 'an image'} classifier but {data} is "
            f"{'not text' if text else 'text'}; give it {want}"
        )
    parts = ("train", "test") if split == "all" else (split,)
    if isinstance(classifier, TextClassifier):
        rows = _text_rows(classifier, data, parts)
    else:
        rows = _image_rows(classifier, data, parts, device, batch_size)
    header = ["split", "index", "label", "text" if text else "file", "predicted", "probability"]
    header += [f"p({c})" for c in classifier.classes]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    right = labelled = 0
    unknown: set[str] = set()
    for part, index, truth, where, name, p in rows:
        if truth:  # matched by class name: a label the classifier never saw counts as wrong
            labelled += 1
            right += truth == name
            if truth not in classifier.classes:
                unknown.add(truth)
        writer.writerow([part, index, truth, where, name, f"{float(p.max()):.4f}",
                         *(f"{v:.4f}" for v in p.tolist())])  # fmt: skip
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, buffer.getvalue())
    except OSError as error:
        raise SelfSupError(f"could not write {out} ({error}); give a writable --out") from None
    accuracy = right / labelled if labelled else None
    # Labels the classifier has no class for (another spelling, a new class) count as wrong:
    # the caller says so, or an accuracy of 0.000 would go unexplained.
    return {"kind": "text" if text else "image", "rows": len(rows), "path": out,
            "accuracy": accuracy, "labelled": labelled, "classes": list(classifier.classes),
            "unknown_labels": sorted(unknown)}  # fmt: skip


# One CSV row of predict: split, index in it, true label ("" for none), file or text, the
# predicted class, the class probabilities.
Row = tuple[str, int, str, str, str, torch.Tensor]


def _image_rows(
    classifier: Classifier, data: str, parts: tuple[str, ...], device: str, batch_size: int
) -> list[Row]:
    from selfsup.data.base import UNLABELED
    from selfsup.evaluate.features import iterate_batches
    from selfsup.recipe import Recipe, build_data, match_channels

    config = classifier.backbone.config
    spec = Recipe(data=data, image_size=int(config["image_size"]))
    rows: list[Row] = []
    for part in parts:
        try:
            dataset = match_channels(build_data(spec, part), int(config["in_channels"]))
        except NoTestSplit as error:
            if len(parts) > 1:
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
                file = str(paths[index]) if paths is not None else ""
                rows.append((part, index, truth, file, name, p))
                index += 1
    return rows


def _text_rows(classifier: TextClassifier, data: str, parts: tuple[str, ...]) -> list[Row]:
    from selfsup.text.build import split_texts

    # The run's column names, as fine-tuning read its tables. Texts go 256 a batch whatever
    # predict's batch_size (TextClassifier.predict): the batches fine-tuning was scored on.
    opts = {key: classifier.settings.get(key) for key in ("text_column", "label_column")}
    rows: list[Row] = []
    for part in parts:
        try:
            texts, labels = split_texts(data, part, opts, command="predict")
        except NoTestSplit as error:
            if len(parts) > 1:
                break  # a one-file table is all train split
            raise NoTestSplit(f"{error}; or use --split train or all") from None
        predicted, probabilities = classifier.predict(texts)
        for index, (text, label, name, p) in enumerate(
            zip(texts, labels, predicted, probabilities, strict=True)
        ):
            rows.append((part, index, label, text[:200], name, p))
    return rows
