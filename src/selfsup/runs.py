"""What the CLI commands do, as plain functions: pretrain, evaluate and embed a run directory.

A run directory holds:
  run.yaml                 the resolved recipe
  metrics.jsonl            one line of training logs every `log_every` steps
  checkpoints/last.pt      the full training state (atomic; `--resume` reads it)
  backbone/                the trained backbone alone (safetensors + JSON), see load_backbone
  tokenizer.json           text runs only: the tokenizer trained on the run's corpus
  origin.json              the directory pretraining was started in: relative data paths in
                           run.yaml are relative to it (runs without it predate the file)
  metrics.json, report.md, *.png   written by evaluate
  evaluation_rows.jsonl    while `selfsup evaluate` runs: each row as soon as it is measured
                           (kept if it is interrupted or fails; removed once it completes)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from selfsup.engine import CHECKPOINT, TrainConfig, check_resumable, load_checkpoint, pretrain
from selfsup.errors import NoTestSplit, SelfSupError
from selfsup.evaluate.labels import parse_fraction
from selfsup.recipe import (
    Recipe,
    build_data,
    build_task,
    check_value,
    load_run,
    match_channels,
    save_recipe,
)
from selfsup.text.corpus import is_text_spec

BACKBONE_DIR = "backbone"
EVALUATION_ROWS = "evaluation_rows.jsonl"  # rows measured so far, while an evaluation runs
ORIGIN = "origin.json"  # {"cwd": where pretraining was started}


def run_data(run_dir: str | Path, spec: str, *, note: bool = True) -> str:
    """A run's data spec with each relative path that does not exist from here resolved
    against the directory the run was started in (origin.json), saying so once on stderr.

    run.yaml keeps the spec as the user typed it, so `evaluate` or `--resume` from another
    directory would otherwise look for `imgs` in the wrong place. Specs without files
    (digits), absolute paths and runs written before origin.json come back unchanged.
    """
    kind, sep, rest = spec.partition(":")
    origin_file = Path(run_dir) / ORIGIN
    if not sep or not rest or not origin_file.is_file():
        return spec
    try:
        origin = Path(json.loads(origin_file.read_text())["cwd"])
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        return spec  # a damaged origin.json only loses the convenience
    paths, q, options = rest.partition("?")  # video:DIR?length=16
    # Only text specs list several files; a folder name may itself contain a comma.
    parts = paths.split(",") if is_text_spec(spec) else [paths]
    resolved, moved, missing = [], [], []
    for part in parts:
        path = Path(part.strip()).expanduser()
        if not part.strip() or path.is_absolute() or path.exists():
            resolved.append(part)
        elif (origin / path).exists():
            resolved.append(str(origin / path))
            moved.append(f"{part.strip()} -> {origin / path}")
        else:
            resolved.append(part)
            missing.append(part.strip())
    if note and moved:
        print(
            f"note: reading the run's data relative to {origin}, where it was started: "
            f"{', '.join(moved)}",
            file=sys.stderr,
        )
    if note and missing and origin.resolve() != Path.cwd().resolve():
        print(
            f"note: the run was started in {origin}; its data path(s) {', '.join(missing)} "
            "are relative to that directory, but exist neither there nor here",
            file=sys.stderr,
        )
    return f"{kind}{sep}{','.join(resolved)}{q}{options}"


def load_run_data(run_dir: str | Path, *, note: bool = True) -> Recipe:
    """load_run, with its data specs (`data`, `evaluate.data`) found from here (run_data); for
    reading, not saving. `note`: say where they were found (off when the user's own --data is
    read instead, where a note about the run's data would only confuse)."""
    recipe = load_run(run_dir)
    evaluate = dict(recipe.evaluate)
    if evaluate.get("data"):
        evaluate["data"] = run_data(run_dir, evaluate["data"], note=note)
    data = run_data(run_dir, recipe.data, note=note and not evaluate.get("data"))
    return dataclasses.replace(recipe, data=data, evaluate=evaluate)


def checkpoint_steps(run_dir: str | Path) -> tuple[int, int] | None:
    """(steps the run's weights have had, steps its recipe asks for), or None without weights.

    A finished run's backbone.json names its steps; an interrupted one has only the checkpoint.
    """
    run_dir = Path(run_dir)
    planned = int(load_run(run_dir).train.get("steps", TrainConfig.steps))
    description = run_dir / BACKBONE_DIR / "backbone.json"
    if description.is_file():
        from selfsup.backbones.export import read_description

        steps = read_description(description.parent).get("extra", {}).get("steps")
        if steps is not None:
            return int(steps), planned
    if (run_dir / CHECKPOINT).is_file():
        return int(load_checkpoint(run_dir / CHECKPOINT)["step"]), planned
    return None


def note_partial_run(run_dir: str | Path, doing: str) -> dict:
    """{"steps", "planned_steps"} of the run's weights for a results file; a note on stderr when
    pretraining stopped early, since evaluate/embed then use that partial checkpoint."""
    steps = checkpoint_steps(run_dir)
    if steps is None:
        return {}
    done, planned = steps
    if done < planned:
        print(
            f"note: pretraining stopped at step {done} of {planned}; {doing} that checkpoint; "
            f"`selfsup pretrain --resume {run_dir}` finishes it",
            file=sys.stderr,
        )
    return {"steps": done, "planned_steps": planned}


# Batch norm's running statistics move 10% of the way per step: after this many steps the
# initial unit variance is under 1% of them.
SETTLED_STEPS = 50


def _note_unsettled_batch_norm(backbone: torch.nn.Module, steps: int | None) -> None:
    """Frozen features use batch norm's running statistics, which a network pretrained for a
    few steps has not yet learnt: its features all look alike and score far below a random
    network's, which would otherwise read as a failed method."""
    batch_norm = any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in backbone.modules()
    )
    if batch_norm and steps is not None and steps < SETTLED_STEPS:
        print(
            f"note: the backbone was pretrained for only {steps} steps; its batch norm's running "
            f"statistics take about {SETTLED_STEPS} to settle, so its frozen features (kNN, "
            "linear) are not yet meaningful",
            file=sys.stderr,
        )


def pretrain_run(
    recipe: Recipe,
    out_dir: str | Path,
    *,
    resume: bool = False,
    download: bool = False,
    progress: bool = True,
) -> dict:
    """Pretrain the recipe's task into out_dir and export the backbone; returns the engine's
    summary plus "unit": what its images_per_second counts (images, clips or sequences).

    Everything that can fail on bad input (recipe, data, task options) is checked before
    out_dir is created, so a failed start leaves nothing behind.
    """
    if not isinstance(recipe, Recipe):
        raise SelfSupError(
            f"pretrain_run takes a Recipe, got {type(recipe).__name__}; build one with "
            "Recipe.from_dict({...}) or selfsup.recipe.load_recipe(PATH)"
        )
    out_dir = Path(out_dir)
    if not resume and (out_dir / CHECKPOINT).exists():
        raise SelfSupError(
            f"{out_dir} already holds a run; continue it with `--resume {out_dir}` or pick "
            "another --out"
        )
    from selfsup.backbones import BACKBONES
    from selfsup.tasks import task_class

    task_class(recipe.task)  # unknown names fail here, before any data is read
    from selfsup.tasks import TEXT_TASKS

    if recipe.task in TEXT_TASKS and not is_text_spec(recipe.data):
        raise SelfSupError(
            f"task {recipe.task} learns from text; give --data text:PATH, tsv:PATH, csv:PATH "
            f"or parallel:A,B (got {recipe.data})"
        )
    if recipe.task not in TEXT_TASKS and is_text_spec(recipe.data):
        raise SelfSupError(
            f"task {recipe.task} is for images or clips, not text (got {recipe.data}); "
            f"text data takes: {', '.join(TEXT_TASKS)}"
        )
    if recipe.backbone_name not in BACKBONES:
        raise SelfSupError(
            f"unknown backbone {recipe.backbone_name!r}; choose one of: {', '.join(BACKBONES)}"
        )
    recipe.check()
    config = TrainConfig.from_dict(recipe.train)
    if resume:
        check_resumable(out_dir, config)  # before the data is read and run.yaml rewritten
    # run.yaml keeps the data spec as given, and names the backbone even where the recipe
    # left it to the task; `recipe` below reads the data from where the run was started.
    recipe = saved = dataclasses.replace(recipe, backbone=recipe.backbone_name)
    if resume:
        recipe = dataclasses.replace(recipe, data=run_data(out_dir, recipe.data))
    tokenizer = None
    if is_text_spec(recipe.data):
        # Text: the tokenizer is trained on the corpus (or reloaded on resume) and kept in the
        # run directory; evaluate / generate / embed read it back from there.
        from selfsup.text.build import (
            build_text_task,
            prepare_text,
            start_from_word_vectors,
            text_options,
            token_embeddings,
        )

        tokenizer, dataset = prepare_text(recipe, out_dir if resume else None)
    else:
        dataset = build_data(recipe, "train", download=download)
    if len(dataset) == 0:
        raise SelfSupError(f"{recipe.data} has no samples to train on")
    torch.manual_seed(config.seed)  # the initial weights are part of what a seed reproduces
    if tokenizer is not None:
        task = build_text_task(recipe, tokenizer, dataset)
        options = text_options(recipe)
        if options["word_vectors"] and not resume:  # on resume the checkpoint holds the weights
            start_from_word_vectors(task.backbone, options["word_vectors"])
        if options["freeze_word_vectors"]:
            token_embeddings(task.backbone).weight.requires_grad_(False)
    else:
        task = build_task(recipe, dataset.image_shape, len(dataset))

    created = not out_dir.exists()
    try:
        save_recipe(saved, out_dir)
        if not (out_dir / ORIGIN).exists():
            (out_dir / ORIGIN).write_text(json.dumps({"cwd": os.getcwd()}) + "\n")
        if tokenizer is not None:
            tokenizer.save(out_dir)
        # What one sample of a batch is, for the throughput on the bar and in the summary.
        clips = getattr(task, "takes_clips", False)
        unit = "sequences" if tokenizer is not None else "clips" if clips else "images"
        summary = pretrain(
            task, dataset, out_dir, config, resume=resume, progress=progress, unit=unit
        )
        summary["unit"] = unit
    except Exception:
        # A run that failed before its first checkpoint has nothing worth keeping.
        if created and not (out_dir / CHECKPOINT).exists():
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    from selfsup.backbones import save_backbone

    summary["next"] = _next_command(out_dir, saved, dataset)
    if summary.get("rank", 0) != 0:
        return summary  # under DDP the weights are the same on every rank: rank 0 exports
    save_backbone(
        task.backbone,
        out_dir / BACKBONE_DIR,
        extra={"task": recipe.task, "data": saved.data, "steps": summary["steps"]},
    )
    return summary


def _next_command(out_dir: Path, recipe: Recipe, dataset) -> str:
    """The command to run after pretraining: evaluate needs labels, which unlabelled images
    (a flat folder) and clips (video:DIR) do not have."""
    if is_text_spec(recipe.data):  # perplexity needs no labels; the text evaluation says so
        return f"selfsup evaluate {out_dir}"
    clips = hasattr(dataset, "clip_labels")
    labelled = dataset.clip_labels is not None if clips else dataset.has_labels
    if labelled or recipe.evaluate.get("data"):
        return f"selfsup evaluate {out_dir}"
    example = "moving-mnist:DIR" if clips else "folder:LABELLED_DIR"
    return f"selfsup evaluate {out_dir} --data {example}"


def trained_task(
    run_dir: str | Path,
    image_shape: tuple[int, int, int] | None = None,
    checkpoint: str | Path | None = None,
):
    """The run's task (backbone + heads) with the weights of its last checkpoint (or of
    `checkpoint`, e.g. a kept checkpoints/step_N.pt), in eval mode.

    `image_shape` is that of the training data; it is read from the data when not given.
    """
    run_dir = Path(run_dir)
    recipe = load_run_data(run_dir, note=False)
    if image_shape is None:
        image_shape = tuple(build_data(recipe, "train").image_shape)
    state = load_checkpoint(Path(checkpoint) if checkpoint else run_dir / CHECKPOINT)
    task = build_task(recipe, image_shape, state.get("dataset_size"))
    task.load_state_dict(state["task"])
    return task.eval()


def resolve_device(device: str) -> str:
    """The device to evaluate on: auto gives cuda when a GPU is visible, else cpu; cpu, cuda
    and cuda:N are checked here, so a wrong name or a missing GPU is a one-line error, not a
    torch traceback."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = device.partition(":")
    if device != "cpu" and (kind != "cuda" or (index and not index.isdigit())):
        raise SelfSupError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto")
    if kind == "cuda" and not torch.cuda.is_available():
        raise SelfSupError(f"--device {device} but no CUDA GPU is visible; use cpu or auto")
    if index and int(index) >= torch.cuda.device_count():
        raise SelfSupError(
            f"--device {device} but only {torch.cuda.device_count()} GPU(s) are visible"
        )
    return device


def run_backbone(run_dir: str | Path) -> torch.nn.Module:
    """The trained backbone of a run: its export if present, else from the last checkpoint."""
    run_dir = Path(run_dir)
    if (run_dir / BACKBONE_DIR / "backbone.json").is_file():
        from selfsup.backbones.export import load_backbone

        # The library's own callers pass prepared batches; the check is for users' input.
        return load_backbone(run_dir / BACKBONE_DIR, check_inputs=False)
    if not (run_dir / CHECKPOINT).is_file():
        # load_run first: a folder that is no run at all gets that error instead.
        train = load_run(run_dir).train
        every = train.get("checkpoint_every", TrainConfig.checkpoint_every)
        first = min(every, train.get("steps", TrainConfig.steps))
        raise SelfSupError(
            f"{run_dir} has no checkpoint yet: its pretraining stopped before the first one "
            f"(step {first}); start it again with `selfsup pretrain --recipe "
            f"{run_dir / 'run.yaml'} --out {run_dir}`"
        )
    return trained_task(run_dir).backbone


@contextmanager
def kept_rows(
    run_dir: str | Path, settings: dict | None = None
) -> Iterator[tuple[Callable[[dict], None], dict[tuple[str, str, float], dict]]]:
    """(`on_row`, `finished`) for evaluate_run. `on_row` appends each row to
    RUN/evaluation_rows.jsonl as soon as it is measured, so an evaluation interrupted or failing
    after an hour keeps what it had finished (and says where). `finished` holds the rows kept
    there by an interrupted evaluation with the same `settings` (and the same checkpoint), by
    (method, protocol, fraction): a re-run takes them instead of measuring them again. The file
    goes when the evaluation completes: metrics.json then holds every row."""
    kept = Path(run_dir) / EVALUATION_ROWS
    header = {"settings": {**(settings or {}), "checkpoint": checkpoint_steps(run_dir)}}
    header = json.loads(json.dumps(header))  # tuples as lists, as they come back from the file
    finished: dict[tuple[str, str, float], dict] = {}
    if kept.is_file():
        lines = kept.read_text().splitlines()
        try:
            same = bool(lines) and json.loads(lines[0]) == header
        except json.JSONDecodeError:  # a header cut short: no row can be trusted
            same = False
        rows = []
        for line in lines[1:] if same else []:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short (a crash, a full disk): the rows before it stand
        finished = {(r["method"], r["protocol"], r["fraction"]): r for r in rows}
        if finished:
            # Rewritten without the cut line, which the next row would otherwise extend.
            kept.write_text("".join(json.dumps(x) + "\n" for x in [header, *rows]))
            print(
                f"note: taking {len(finished)} row(s) the interrupted evaluation finished from "
                f"{kept}",
                file=sys.stderr,
            )
        else:
            kept.unlink()  # rows of an earlier evaluation with other settings
    if kept.parent.is_dir() and not kept.is_file():
        kept.write_text(json.dumps(header) + "\n")

    def keep(row: dict) -> None:
        with open(kept, "a") as f:
            f.write(json.dumps(row) + "\n")

    try:
        yield keep, finished
    except BaseException:
        rows = len(kept.read_text().splitlines()) - 1 if kept.exists() else 0
        if rows <= 0:
            kept.unlink(missing_ok=True)  # nothing finished: no file to take up
        else:
            print(
                f"selfsup: {rows} finished row(s) kept in {kept}; the same `selfsup evaluate` "
                "command takes them up again",
                file=sys.stderr,
            )
        raise
    kept.unlink(missing_ok=True)


def label_fractions(value: Any) -> tuple[float, ...]:
    """Label budgets as evaluate_run takes them: fractions (0.01, 0.1, 1.0), one of them, or
    the CLI's spelling ("1%", "10%"); one-line errors for anything else."""
    values = (value,) if isinstance(value, (int, float, str)) else value
    try:
        values = list(values)
    except TypeError:
        raise SelfSupError(
            f"fractions must be numbers such as (0.01, 0.1, 1.0), got {value!r}"
        ) from None
    fractions = []
    for item in values:
        try:
            if isinstance(item, bool):
                raise ValueError
            fractions.append(parse_fraction(item) if isinstance(item, str) else float(item))
        except (TypeError, ValueError):
            raise SelfSupError(
                f"fractions must be numbers such as (0.01, 0.1, 1.0) or '10%', got {item!r}"
            ) from None
    return tuple(fractions)


def evaluate_run(
    run_dir: str | Path,
    *,
    data: str | None = None,
    protocols: tuple[str, ...] | None = None,
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0),
    baselines: tuple[str, ...] = ("raw", "random_init", "supervised"),
    k: int = 20,
    freeze_stages: int = 0,
    rescale: bool = False,
    seed: int = 0,
    device: str = "auto",
    command: str | None = None,
    progress: bool = True,
    text_options: dict | None = None,
    on_row: Callable[[dict], None] | None = None,
    finished: dict[tuple[str, str, float], dict] | None = None,
) -> dict:
    """Evaluate a run's backbone on labelled data against the baselines; writes the report.

    Text runs go to selfsup.text.evaluate (fine-tuning, TF-IDF, perplexity, retrieval);
    `text_options` passes its extra arguments (word2vec, retrieval). `rescale`: fine-tuning
    first scales the convolutions back to a fresh network's weight norms (CNN backbones; see
    selfsup.evaluate.finetune.rescale_to_fresh). `on_row` is called with each row as soon as
    it is measured, and `finished` rows are taken as they are (`kept_rows` gives both).
    """
    from selfsup.evaluate import (
        evaluate_backbone,
        extract_features,
        nearest_neighbor_grid,
        write_report,
    )

    fractions = label_fractions(fractions)
    for name, value in (("k", k), ("seed", seed), ("freeze_stages", freeze_stages)):
        check_value(name, value, "int")
    run_dir = Path(run_dir)
    recipe = load_run_data(run_dir, note=data is None)
    device = resolve_device(device)
    if is_text_spec(recipe.data):
        from selfsup.text.evaluate import evaluate_text_run

        if rescale:
            raise SelfSupError(
                "rescale is for CNN backbones (convolutions followed by batch norm); a text "
                "run has none: leave --rescale off"
            )
        return evaluate_text_run(
            run_dir, data=data, protocols=protocols, fractions=fractions,
            baselines=baselines, freeze_stages=freeze_stages, k=k, seed=seed, device=device,
            command=command, progress=progress, on_row=on_row, finished=finished,
            **(text_options or {}),
        )  # fmt: skip
    protocols = protocols or ("knn", "linear")
    data = data or recipe.evaluate.get("data")
    if (freeze_stages or rescale) and "finetune" not in protocols:
        flag = "--freeze-stages" if freeze_stages else "--rescale"
        raise SelfSupError(
            f"{flag} changes fine-tuning, which this evaluation does not run: add finetune to "
            "--protocol (e.g. --protocol knn,linear,finetune)"
        )
    backbone = run_backbone(run_dir).to(device)
    pretrained = note_partial_run(run_dir, "evaluating")
    _note_unsettled_batch_norm(backbone, pretrained.get("steps"))
    train, test = (backbone_data(recipe, split, data, backbone) for split in ("train", "test"))
    from selfsup.data.video import VideoDataset

    if isinstance(train, VideoDataset):
        options = {"protocols": protocols, "fractions": fractions, "baselines": baselines}
        options.update(k=k, seed=seed, freeze_stages=freeze_stages, rescale=rescale)
        options.update(device=device, progress=progress, on_row=on_row, finished=finished)
        return _evaluate_video_run(
            run_dir, recipe, backbone, train, test, data, command, pretrained, **options
        )
    for split, dataset in (("train", train), ("test", test)):
        if not dataset.has_labels:
            raise SelfSupError(
                f"{data or recipe.data} ({split} split) has unlabeled images; evaluation needs "
                "labels (for an image folder: one sub-folder per class)"
            )
    _check_finetune_options(backbone, train.image_shape, freeze_stages, rescale, seed, progress)
    started = time.perf_counter()
    # Extracted once: the frozen protocols and the neighbour pictures both use them.
    train_feats = extract_features(backbone, train, device=device)
    test_feats = extract_features(backbone, test, device=device)
    results = evaluate_backbone(
        backbone,
        train,
        test,
        protocols=protocols,
        fractions=fractions,
        baselines=baselines,
        k=k,
        freeze_stages=freeze_stages,
        seed=seed,
        device=device,
        progress=progress,
        finetune_options={"rescale": rescale},
        features=(train_feats, test_feats),
        on_row=on_row,
        finished=finished,
    )
    results["seconds"] = time.perf_counter() - started
    results["run"] = {**_run_info(recipe, data), **pretrained}

    neighbors = nearest_neighbor_grid(train_feats, train, test_feats, test)
    pictures = _task_pictures(run_dir, test)
    write_report(
        run_dir,
        results,
        title=f"{recipe.task} on {recipe.data}",
        metrics_path=run_dir / "metrics.jsonl",
        neighbors=neighbors,
        pictures=pictures,
        command=command,
    )
    return results


def backbone_data(recipe, split: str, data: str | None, backbone):
    """A run's data (or `data`) as the images its backbone takes: resized to the size it was
    pretrained at and, where the channels differ (gray against RGB), converted, saying so
    once."""
    # The backbone's own size, not the recipe's: a recipe without image_size (28 px
    # Fashion-MNIST) would leave other data at its own size (a folder's default 32 px), which
    # a ViT cannot take and a CNN sees at another scale than it learnt, and than
    # prepare_images and `selfsup predict` give it.
    size = backbone.config.get("image_size", recipe.image_size)
    dataset = build_data(dataclasses.replace(recipe, image_size=size), split, spec=data)
    converted = match_channels(dataset, backbone.config["in_channels"])
    if converted is not dataset and split == "train":
        kind = {1: "gray", 3: "RGB"}
        print(
            f"note: the backbone takes {kind[converted.image_shape[0]]} images; converting the "
            f"{kind[dataset.image_shape[0]]} images of {dataset.name} to match",
            file=sys.stderr,
        )
    return converted


def _check_finetune_options(backbone, image_shape, freeze_stages, rescale, seed, progress):
    """Fail now, not after the frozen protocols, if the backbone cannot have `freeze_stages`
    stages frozen or be rescaled; say by how much pretraining grew its convolutions."""
    from selfsup.evaluate.finetune import conv_growth, first_stages

    first_stages(backbone, freeze_stages)
    if not rescale:
        return
    growth = [factor for *_, factor in conv_growth(backbone, image_shape, seed)]
    if progress:
        print(
            f"fine-tuning rescales {len(growth)} convolutions to a fresh network's norms "
            f"(pretraining grew them by {min(growth):.2f}x to {max(growth):.2f}x)"
        )


def _run_info(recipe, data: str | None) -> dict:
    """What a results file says about the run it evaluated."""
    return {
        "task": recipe.task,
        "backbone": recipe.backbone_name,
        "data": recipe.data,
        "eval_data": data or recipe.data,
    }


def _evaluate_video_run(
    run_dir, recipe, backbone, train, test, data, command, pretrained, **options
) -> dict:
    """Multi-label clip classification (selfsup.evaluate.video) and the report."""
    from selfsup.evaluate import write_report
    from selfsup.evaluate.video import evaluate_video_backbone

    started = time.perf_counter()
    _check_finetune_options(backbone, train.image_shape, options["freeze_stages"],
                            options["rescale"], options["seed"], options["progress"])  # fmt: skip
    results = evaluate_video_backbone(backbone, train, test, **options)
    results["seconds"] = time.perf_counter() - started
    results["run"] = {**_run_info(recipe, data), **pretrained}
    write_report(
        run_dir,
        results,
        title=f"{recipe.task} on {recipe.data} (which digits does a clip show)",
        metrics_path=run_dir / "metrics.jsonl",
        pictures=_task_pictures(run_dir, test),
        command=command,
    )
    return results


def _task_pictures(run_dir: Path, dataset) -> dict[str, torch.Tensor]:
    """What the task makes of a few real images (views, rotations, reconstructions...);
    video tasks get the first clips instead."""
    if not (run_dir / CHECKPOINT).exists():
        return {}
    try:
        task = trained_task(run_dir, dataset.image_shape)
    except SelfSupError as error:
        # Called once the rows are measured: a damaged checkpoint (the backbone was read from
        # its export) costs the report these pictures, not the whole evaluation.
        print(f"note: the report has no task pictures: {error}", file=sys.stderr)
        return {}
    if task.takes_clips:
        if not hasattr(dataset, "clips"):
            return {}
        images = dataset.clips[:8].float() / 255
    else:
        images = dataset.get_batch(torch.arange(min(8, len(dataset)))).float() / 255
    torch.manual_seed(0)
    return task.show(images)


def embed_run(
    run_dir: str | Path, data: str, out: str | Path, *, split: str = "all", device: str = "auto"
) -> tuple[Path, Path, dict[str, int]]:
    """Features of every image (or text) of `data` as a float32 .npy array (N, feature_dim),
    and beside it a TSV naming each row (split, index in it, label, file where there is one).

    `split="all"` is the train split, then the test split where the data has one (a flat
    folder, `video:DIR` or a tsv without a held-out file is all train).
    Returns the two paths and the number of rows of each split.
    """
    import io

    import numpy as np

    from selfsup.evaluate import extract_features
    from selfsup.evaluate.report import atomic_write

    if split not in ("train", "test", "all"):
        raise SelfSupError(f"embed: split must be train, test or all, got {split!r}")
    recipe = load_run_data(run_dir, note=data is None)
    device = resolve_device(device)
    text = is_text_spec(recipe.data)
    backbone = None if text else run_backbone(run_dir).to(device)
    note_partial_run(run_dir, "embedding with")
    features, rows, counts = [], [], {}
    for part in ("train", "test") if split == "all" else (split,):
        try:
            if text:
                from selfsup.text.evaluate import embed_texts

                part_features, labels = embed_texts(run_dir, data, part, device)
                part_rows = [(part, i, label, "") for i, label in enumerate(labels)]
            else:
                dataset = backbone_data(recipe, part, data, backbone)
                part_features = extract_features(backbone, dataset, device=device)
                part_rows = _row_names(dataset, part)
        except NoTestSplit as error:
            if split == "all":
                break  # all of this data is its train split
            raise NoTestSplit(
                f"{data or recipe.data} has no test split ({error}); embed it with --split "
                "train or all"
            ) from None
        features.append(part_features.cpu())
        rows += part_rows
        counts[part] = len(part_features)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    array = io.BytesIO()
    np.save(array, torch.cat(features).numpy().astype(np.float32))
    atomic_write(out, array.getvalue())
    names = out.with_name(out.name.removesuffix(".npy") + ".rows.tsv")
    lines = ["split\tindex\tlabel\tfile"] + ["\t".join(map(str, row)) for row in rows]
    atomic_write(names, "\n".join(lines) + "\n")
    return out, names, counts


def _row_names(dataset, split: str) -> list[tuple[str, int, str, str]]:
    """(split, index, label name or "", file or "") for every sample of an image dataset;
    a video's rows are its frames, named after their clip's file or folder where the source
    records it (`clip_files`)."""
    from selfsup.data.base import UNLABELED

    paths = getattr(dataset, "paths", None)
    if paths is None and getattr(dataset, "clip_files", None) is not None:
        paths = [dataset.clip_files[i] for i in dataset.clip_ids.tolist()]
    classes = getattr(dataset, "classes", None)
    rows = []
    for i, label in enumerate(dataset.labels.tolist()):
        name = "" if label == UNLABELED else classes[label] if classes else str(label)
        rows.append((split, i, name, paths[i] if paths is not None else ""))
    return rows
