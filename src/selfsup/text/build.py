"""From a recipe to the text pieces of a run: tokenizer, dataset, backbone and task.

A text recipe is an ordinary recipe whose `data` is a text spec (text:, tsv:, csv:,
parallel:) and whose `text` mapping holds the tokenizer and packing options (TEXT_OPTIONS).
The engine and the CLI then treat the run like any other.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from selfsup.errors import DataError, NoTestSplit, SelfSupError
from selfsup.text.corpus import (
    LABEL_COLUMNS,
    TEXT_COLUMNS,
    MissingColumn,
    TextSpec,
    iter_table,
    language_of,
    parse_text_spec,
    plain_documents,
    read_parallel,
    read_table,
)
from selfsup.text.data import LabeledText, PackedText, ParallelText, SentencePairs
from selfsup.text.tokenizer import TextTokenizer, load_tokenizer, train_tokenizer

TEXT_OPTIONS: dict[str, Any] = {
    "tokenizer": None,  # wordpiece for encoders, bpe (byte-level) for the causal decoder
    "vocab_size": 8000,
    "seq_len": 128,  # packed block length (mlm, clm, word2vec) or longest pair (nsp, tlm)
    "lowercase": None,  # default: True for wordpiece, False for bpe
    "text_column": None,  # tsv/csv: default the first of sentence, text, review, content
    "label_column": None,  # tsv/csv: default the first of label, labels, class, target
    "limit": None,  # read at most this many documents / rows / pairs (quick runs, tests)
    "word_vectors": None,  # a word2vec run: its tokenizer, and its vectors start the embeddings
    "freeze_word_vectors": False,  # keep those vectors fixed while pretraining
}


def text_options(recipe) -> dict[str, Any]:
    unknown = sorted(set(recipe.text) - set(TEXT_OPTIONS))
    if unknown:
        raise SelfSupError(
            f"unknown text option(s) {', '.join(unknown)}; valid: {', '.join(TEXT_OPTIONS)}"
        )
    options = {**TEXT_OPTIONS, **recipe.text}
    if options["freeze_word_vectors"] and not options["word_vectors"]:
        raise SelfSupError(
            "text option freeze_word_vectors keeps word2vec's vectors fixed; name the word2vec "
            "run with text option word_vectors too"
        )
    _check_options(options, recipe)
    return options


# The shortest text.seq_len each data format can hold: a packed block needs an input and a
# target ([CLS] and a token for an encoder); an NSP pair is [CLS] A [SEP] B [SEP]; a TLM pair
# gives each side half, less its [CLS] and [SEP].
MIN_SEQ_LEN = {"packed": 2, "pairs": 5, "parallel": 6}


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_options(options: dict[str, Any], recipe) -> None:
    """Bad values as one-line errors at start-up, not tracebacks at the first step."""
    from selfsup.tasks import TEXT_TASKS, task_class

    seq_len, limit, lowercase = options["seq_len"], options["limit"], options["lowercase"]
    fmt = getattr(task_class(recipe.task), "data_format", "packed")
    least = MIN_SEQ_LEN.get(fmt, 2) if recipe.task in TEXT_TASKS else 2
    if not _whole(seq_len) or seq_len < least:
        raise SelfSupError(
            f"text.seq_len must be a whole number of tokens, at least {least} for task "
            f"{recipe.task}; got {seq_len!r}"
        )
    if lowercase is not None and not isinstance(lowercase, bool):
        raise SelfSupError(f"text.lowercase must be true or false (or null), got {lowercase!r}")
    if limit is not None and (not _whole(limit) or limit < 1):
        raise SelfSupError(
            f"text.limit must be a whole number of at least 1 (or null for all), got {limit!r}"
        )


def documents(spec: TextSpec, split: str, opts: dict[str, Any]) -> Iterator[list[str]]:
    """Documents (lists of sentences) of a text or table spec; a table row is a document."""
    if spec.kind == "text":
        docs = plain_documents(spec.paths[0], split)
    elif spec.kind in ("tsv", "csv"):
        rows = iter_table(
            _table_path(spec, split), "\t" if spec.kind == "tsv" else ",", opts["text_column"]
        )
        docs = ([text] for text, _ in rows if text)
    else:
        raise SelfSupError("parallel:A,B data is read as sentence pairs; use it with task tlm")
    return islice(docs, opts["limit"])


def _table_path(spec: TextSpec, split: str) -> Path:
    if split == "train":
        return spec.paths[0]
    if len(spec.paths) < 2:
        raise NoTestSplit(
            f"{spec.kind}:{spec.paths[0]} has no held-out file; write {spec.kind}:TRAIN,TEST"
        )
    return spec.paths[1]


def parallel_pairs(spec: TextSpec, opts: dict[str, Any]) -> tuple[list[str], list[str]]:
    left, right = read_parallel(*spec.paths)
    limit = opts["limit"] or len(left)
    return left[:limit], right[:limit]


def fit_tokenizer(recipe, causal: bool) -> TextTokenizer:
    """Train the recipe's tokenizer on its training split (streamed)."""
    opts, spec = text_options(recipe), parse_text_spec(recipe.data)
    kind = opts["tokenizer"] or ("bpe" if causal else "wordpiece")
    langs: list[str] = []
    if spec.kind == "parallel":
        left, right = parallel_pairs(spec, opts)
        langs = [language_of(p) for p in spec.paths]
        if langs[0] == langs[1]:
            names = " and ".join(str(path) for path in spec.paths)
            raise SelfSupError(
                f"parallel files {names} are both language {langs[0]!r}; name them by their "
                "language (train.en.gz, train.de.gz)"
            )
        texts: Any = iter(left + right)
    else:
        texts = (s for doc in documents(spec, "train", opts) for s in doc)
    return train_tokenizer(texts, kind, opts["vocab_size"], langs, opts["lowercase"])


def build_text_dataset(recipe, tokenizer: TextTokenizer, task_cls: type, split: str = "train"):
    """The dataset in the shape the task reads (its `data_format`)."""
    opts, spec = text_options(recipe), parse_text_spec(recipe.data)
    fmt, seq_len = getattr(task_cls, "data_format", "packed"), int(opts["seq_len"])
    if fmt == "parallel":
        if spec.kind != "parallel":
            raise SelfSupError(f"task {recipe.task} needs parallel:A,B data, got {recipe.data}")
        left, right = parallel_pairs(spec, opts)
        langs = (language_of(spec.paths[0]), language_of(spec.paths[1]))
        return ParallelText.build(left, right, tokenizer, langs, seq_len)
    if fmt == "pairs":
        return SentencePairs.build(documents(spec, split, opts), tokenizer, seq_len)
    cls_token = getattr(task_cls, "cls_token", not getattr(task_cls, "causal", False))
    return PackedText.build(documents(spec, split, opts), tokenizer, seq_len, cls_token)


def labeled_text(
    spec: str,
    split: str,
    tokenizer: TextTokenizer,
    opts: dict[str, Any],
    encoder: bool,
    max_len: int,
    classes: list[str] | None = None,
) -> LabeledText:
    """Labelled texts of a tsv/csv spec's split for downstream classification."""
    parsed = parse_text_spec(spec)
    if parsed.kind not in ("tsv", "csv"):
        raise SelfSupError(f"labelled text must be tsv:TRAIN,TEST or csv:TRAIN,TEST, got {spec}")
    path = _table_path(parsed, split)
    with run_columns(opts):
        texts, labels = read_table(
            path, "\t" if parsed.kind == "tsv" else ",", opts["text_column"], opts["label_column"]
        )
    if labels is None:
        raise MissingColumn(
            f"{path} has no label column (looked for {', '.join(LABEL_COLUMNS)})",
            run_columns_fix(opts),
        )
    # An empty cell is a missing label, not a class named "".
    kept = [i for i, label in enumerate(labels) if label]
    notes = []
    if len(kept) < len(labels):
        notes.append(f"{path}: left out {len(labels) - len(kept)} row(s) with an empty label")
        texts, labels = [texts[i] for i in kept], [labels[i] for i in kept]
        if not kept:
            raise DataError(f"{path} has no row with a label; fill in its label column")
    data = LabeledText.build(texts, labels, tokenizer, max_len, encoder, classes)
    data.notes = tuple(notes)
    return data


def run_columns_fix(opts: dict[str, Any]) -> str:
    """The fix for a missing column of a table read for a trained run, whose column names are
    fixed by its recipe: evaluate and embed take no text options."""
    text = opts["text_column"] or "/".join(TEXT_COLUMNS)
    label = opts["label_column"] or "/".join(LABEL_COLUMNS)
    return (
        f"the run reads column names from its recipe (text.text_column / text.label_column, "
        f"set at pretraining), so name this table's columns {text} and {label}"
    )


@contextmanager
def run_columns(opts: dict[str, Any]) -> Iterator[None]:
    """Missing-column errors with the fix that suits a trained run (run_columns_fix)."""
    try:
        yield
    except MissingColumn as error:
        raise MissingColumn(error.problem, run_columns_fix(opts)) from None


def text_framing(backbone) -> tuple[bool, int]:
    """(encoder, max_len): how `backbone` reads a text, for LabeledText.build. An encoder's
    texts start with [CLS] (a decoder classifies its final token's state instead); texts
    are cut to the backbone's longest sequence (512 for word vectors, which have none)."""
    return not getattr(backbone, "causal", False), int(getattr(backbone, "max_len", 512))


def split_texts(
    spec: str, split: str, opts: dict[str, Any], command: str = "embed"
) -> tuple[list[str], list[str]]:
    """(every text of a split of a text/tsv/csv spec, in order; each one's label, "" where it
    has none), for embed and predict. Plain text gives one text per non-empty line of the
    split's documents (its last 10% of documents is the test split); a table one per data
    row, an empty text too, so a row's position is its row in the table. `opts`: the run's
    text options (its column names); `command` names the caller in errors."""
    parsed = parse_text_spec(spec)
    if parsed.kind == "parallel":
        raise SelfSupError(f"{command} takes text:PATH, tsv:PATH or csv:PATH, not parallel data")
    if parsed.kind in ("tsv", "csv"):
        delimiter = "\t" if parsed.kind == "tsv" else ","
        table = iter_table(
            _table_path(parsed, split), delimiter, opts["text_column"], opts["label_column"]
        )
        with run_columns(opts):
            rows = [(text, label or "") for text, label in table]
        return [text for text, _ in rows], [label for _, label in rows]
    texts = [s for doc in documents(parsed, split, {**opts, "limit": None}) for s in doc]
    return texts, [""] * len(texts)


def labeled_splits(
    spec: str, recipe, tokenizer: TextTokenizer, backbone
) -> tuple[LabeledText, LabeledText]:
    """The train and test splits of a labelled spec, tokenised as `backbone` reads text
    ([CLS]-first for an encoder, truncated to its max_len), test classes in train's order."""
    opts, (encoder, max_len) = text_options(recipe), text_framing(backbone)
    train = labeled_text(spec, "train", tokenizer, opts, encoder, max_len)
    from selfsup.evaluate.labels import require_two_classes

    require_two_classes(train.labels, spec, f"all its rows are labelled {train.classes[0]!r}")
    test = labeled_text(spec, "test", tokenizer, opts, encoder, max_len, train.classes)
    return train, test


def build_text_backbone(recipe, tokenizer: TextTokenizer, task_cls: type):
    from selfsup.backbones import build_backbone
    from selfsup.recipe import check_backbone_fits_task

    name = recipe.backbone_name
    check_backbone_fits_task(recipe.task, name)
    options = dict(recipe.backbone_options)
    if name == "transformer":
        seq_len = int(text_options(recipe)["seq_len"])
        fmt = getattr(task_cls, "data_format", "packed")
        options.setdefault("max_len", max(seq_len, 128) if fmt != "parallel" else seq_len)
        options["causal"] = bool(getattr(task_cls, "causal", False))
        options["segments"] = int(getattr(task_cls, "segments", 0))
        options["langs"] = len(tokenizer.langs)
    options["vocab_size"] = tokenizer.vocab_size
    return build_backbone(name, **options)


def build_text_task(recipe, tokenizer: TextTokenizer, dataset=None):
    """Backbone + task of a text recipe, freshly initialised. word2vec's noise distribution
    comes from the dataset's token counts (a reloaded run gets them from its checkpoint)."""
    from selfsup.tasks import TEXT_TASKS, task_class

    if recipe.task not in TEXT_TASKS:
        raise SelfSupError(
            f"task {recipe.task} is for images; text data takes: {', '.join(TEXT_TASKS)}"
        )
    cls = task_class(recipe.task)
    options = dict(recipe.task_options)
    if "token_counts" in inspect.signature(cls).parameters and isinstance(dataset, PackedText):
        options["token_counts"] = torch.bincount(
            dataset.blocks.flatten().long(), minlength=tokenizer.vocab_size
        )
    backbone = build_text_backbone(recipe, tokenizer, cls)
    try:
        return cls(backbone, tokenizer, **options)
    except TypeError as error:
        valid = [p for p in inspect.signature(cls).parameters if p not in ("backbone", "tokenizer")]
        raise SelfSupError(
            f"task {recipe.task}: bad option(s) {recipe.task_options}; valid: {', '.join(valid)}"
        ) from error


def prepare_text(recipe, run_dir: Path | None) -> tuple[TextTokenizer, Any]:
    """Tokenizer (reloaded from run_dir when resuming, else trained) and training dataset."""
    from selfsup.tasks import task_class

    cls = task_class(recipe.task)
    options = text_options(recipe)
    vectors_run, seq_len = options["word_vectors"], options["seq_len"]
    max_len = recipe.backbone_options.get("max_len")
    # Checked here, before the tokenizer is trained, not at the first step.
    if recipe.backbone_name == "transformer" and isinstance(max_len, int) and seq_len > max_len:
        raise SelfSupError(
            f"text.seq_len={seq_len} is longer than backbone_options.max_len={max_len}, the "
            "longest sequence the Transformer takes; lower text.seq_len or raise max_len"
        )
    if run_dir is not None:
        tokenizer = load_tokenizer(run_dir)
    elif vectors_run:
        tokenizer = load_tokenizer(word2vec_run(vectors_run))  # token ids must match its vectors
    else:
        tokenizer = fit_tokenizer(recipe, bool(getattr(cls, "causal", False)))
    return tokenizer, build_text_dataset(recipe, tokenizer, cls)


def word2vec_run(path: str | Path) -> Path:
    """The directory of a finished word2vec run, or an error that says what to give instead."""
    from selfsup.recipe import load_run

    path = Path(path)
    task = load_run(path).task
    if task != "word2vec":
        raise SelfSupError(
            f"text option word_vectors: {path} is a {task} run; give the --out "
            "folder of a word2vec run (selfsup pretrain --recipe recipes/sst2_word2vec.yaml)"
        )
    return path


def token_embeddings(backbone: torch.nn.Module) -> torch.nn.Embedding:
    """A Transformer backbone's token embeddings, which the word_vectors options act on."""
    embeddings = getattr(getattr(backbone, "embed", None), "tokens", None)
    if not isinstance(embeddings, torch.nn.Embedding):
        raise SelfSupError("text option word_vectors starts a transformer backbone's embeddings")
    return embeddings


@torch.no_grad()
def start_from_word_vectors(backbone: torch.nn.Module, path: str | Path) -> None:
    """Copy a word2vec run's vectors into a Transformer's token embeddings (ELMo-era models
    started from word2vec or GloVe the same way). They are rescaled to the spread of the
    Transformer's own initialisation, N(0, 0.02): word2vec gives the directions (which words
    are alike), and the blocks see inputs of the size they were initialised for."""
    from selfsup.runs import run_backbone

    embeddings = token_embeddings(backbone)
    vectors = run_backbone(word2vec_run(path)).vectors.weight
    if vectors.shape != embeddings.weight.shape:
        raise SelfSupError(
            f"word_vectors: {path} has {tuple(vectors.shape)} vectors (vocabulary x dim) but the "
            f"Transformer's embeddings are {tuple(embeddings.weight.shape)}; set backbone_options."
            f"dim to {vectors.shape[1]}"
        )
    embeddings.weight.copy_(vectors * (0.02 / vectors.std()))


def vectors_only_backbone(backbone: torch.nn.Module, recipe, seed: int = 0) -> torch.nn.Module:
    """A run's Transformer freshly initialised (seed `seed`) with its token embeddings started
    from the word2vec run its recipe names (`text.word_vectors`), its blocks random: the
    control for what pretraining added beyond those vectors (the `vectors_only` baseline)."""
    from selfsup.evaluate.baselines import random_init_backbone

    vectors_run = text_options(recipe)["word_vectors"]
    if not vectors_run:
        raise SelfSupError(
            "the vectors_only baseline needs a run started from word vectors (text option "
            "word_vectors); leave it out of --baselines for this run"
        )
    fresh = random_init_backbone(backbone, seed)
    start_from_word_vectors(fresh, vectors_run)
    return fresh


def trained_text_task(run_dir: str | Path):
    """(task with the last checkpoint's weights in eval mode, tokenizer) of a text run."""
    from selfsup.engine import CHECKPOINT, load_checkpoint
    from selfsup.recipe import load_run

    run_dir = Path(run_dir)
    recipe, tokenizer = load_run(run_dir), load_tokenizer(run_dir)
    task = build_text_task(recipe, tokenizer)
    task.load_state_dict(load_checkpoint(run_dir / CHECKPOINT)["task"])
    return task.eval(), tokenizer
