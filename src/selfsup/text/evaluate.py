"""`selfsup evaluate RUN` for text runs: few-label classification against baselines,
held-out perplexity (mlm, mlm+nsp, clm) and cross-lingual retrieval (tlm).

Classification rows use the image evaluation's format (method, protocol, fraction, n_labels,
accuracy), so the same table, plot and report code renders them:
  ssl finetune / linear / knn    the run's backbone (linear head; frozen for linear/knn)
  tfidf logreg    ("raw")        TF-IDF of words and bigrams + logistic regression
  supervised train ("supervised") the same architecture from random init, same budget
  random_init linear ("random_init") frozen random features + logistic regression
  word2vec logreg  (--word2vec RUN) averaged vectors of a word2vec run + logistic regression
  vectors_only finetune ("vectors_only", runs started from `word_vectors`) the same Transformer
                  with those vectors and random blocks, fine-tuned like the run: what
                  pretraining added beyond the vectors
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from itertools import chain
from pathlib import Path

import torch
import torch.nn.functional as F

from selfsup.errors import NoTestSplit, SelfSupError
from selfsup.evaluate.labels import stratified_subset
from selfsup.recipe import load_run
from selfsup.text.build import documents, labeled_splits, text_options, vectors_only_backbone
from selfsup.text.corpus import language_of, parse_text_spec, read_parallel
from selfsup.text.data import LabeledText, PackedText, TooFewTokens, pad
from selfsup.text.finetune import (
    budget_steps,
    finetune_text,
    logistic_regression_accuracy,
    text_features,
    tfidf_accuracy,
)
from selfsup.text.masking import IGNORE, mask_tokens
from selfsup.text.tokenizer import load_tokenizer

MASKED_TASKS = ("mlm", "mlm+nsp", "tlm")
# Fine-tuning budget, shared by the pretrained model and the from-scratch baseline; only the
# peak learning rate differs (randomly initialised Transformers want a larger one).
FINETUNE = {"batch_size": 32, "lr": 1e-4, "scratch_lr": 5e-4, "epochs": 10, "max_steps": 3000}


def finetune_settings(recipe) -> dict:
    """FINETUNE with the recipe's `evaluate` overrides."""
    return {**FINETUNE, **{key: recipe.evaluate[key] for key in FINETUNE if key in recipe.evaluate}}


def evaluate_text_run(
    run_dir: str | Path,
    *,
    data: str | None = None,
    protocols: tuple[str, ...] | None = None,
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0),
    baselines: tuple[str, ...] = ("raw", "supervised"),
    freeze_stages: int = 0,
    word2vec: str | Path | None = None,
    retrieval: str | None = None,
    k: int = 20,
    seed: int = 0,
    device: str = "cpu",
    command: str | None = None,
    progress: bool = True,
    on_row: Callable[[dict], None] | None = None,
    finished: Mapping[tuple[str, str, float], dict] | None = None,
) -> dict:
    """Evaluate a text run; writes metrics.json and report.md into it and returns the results.

    `data` is labelled tsv/csv `TRAIN,TEST` (default: the recipe's evaluate.data, else its own
    data when that has labels). Fine-tuning options come from the recipe's `evaluate` mapping
    (batch_size, lr, epochs, max_steps; FINETUNE gives the defaults). `on_row` is called with
    each classification row as soon as it is measured; `finished` rows (by method, protocol,
    fraction) of an interrupted run of the same evaluation are taken as they are.
    """
    from selfsup.runs import load_run_data, note_partial_run, run_backbone
    from selfsup.text.build import trained_text_task

    run_dir = Path(run_dir)
    # evaluate_run has said where the run's data was found.
    recipe, tokenizer = load_run_data(run_dir, note=False), load_tokenizer(run_dir)
    backbone = run_backbone(run_dir)
    started = time.perf_counter()
    results: dict = {
        "run": {"task": recipe.task, "backbone": recipe.backbone_name, "data": recipe.data,
                **note_partial_run(run_dir, "evaluating")},
        "seed": seed,
    }  # fmt: skip
    log = print if progress else (lambda *_: None)
    retrieval = retrieval or recipe.evaluate.get("retrieval")
    if retrieval:
        retrieval_languages(tokenizer, retrieval)  # before the slow work
    data = data or recipe.evaluate.get("data") or labelled_default(recipe)
    if not data:
        # Without labelled data --labels and --protocol have nothing to act on; say so rather
        # than print a perplexity as if it were the whole evaluation.
        note = (
            f"no few-label table: {recipe.data} has no labels; pass labelled data with "
            "--data tsv:TRAIN,TEST (or csv:TRAIN,TEST), or set evaluate.data in the recipe"
        )
        print(f"note: {note}", file=sys.stderr)
        results["notes"] = [note]
    if data:
        results.update(
            classification(
                backbone,
                tokenizer,
                recipe,
                data,
                protocols=protocols,
                fractions=fractions,
                baselines=baselines,
                freeze_stages=freeze_stages,
                word2vec=word2vec,
                k=k,
                seed=seed,
                device=device,
                log=log,
                on_row=on_row,
                finished=finished,
                progress=progress,
            )  # fmt: skip
        )
        results["run"]["eval_data"] = data
    if recipe.task in (*MASKED_TASKS, "clm") and parse_text_spec(recipe.data).kind != "parallel":
        task, _ = trained_text_task(run_dir)
        try:
            results["perplexity"] = heldout_perplexity(task, tokenizer, recipe, device)
        except NoTestSplit as error:
            # The pretraining data is the run's own business: the table above still stands.
            note = f"no held-out perplexity: {error}"
            print(f"note: {note}", file=sys.stderr)
            results.setdefault("notes", []).append(note)
    if retrieval:
        results["retrieval"] = retrieval_accuracy(backbone, tokenizer, retrieval, device)
        log(f"retrieval: {results['retrieval']}")
    if not (data or retrieval or "perplexity" in results):
        raise SelfSupError(
            f"nothing to evaluate for {run_dir}: pass --data tsv:TRAIN,TEST with labels "
            "(or set evaluate.data / evaluate.retrieval in the recipe)"
        )
    results["seconds"] = time.perf_counter() - started
    _write(run_dir, recipe, results, command)
    return results


def labelled_default(recipe) -> str | None:
    """The run's own data when it is a labelled table with a test file (tsv:TRAIN,TEST), the
    labelled data evaluate and finetune use when none is given; else None."""
    spec = parse_text_spec(recipe.data)
    return recipe.data if spec.kind in ("tsv", "csv") and len(spec.paths) == 2 else None


def classification(
    backbone, tokenizer, recipe, data: str, *, protocols, fractions, baselines,
    freeze_stages: int, word2vec, k: int, seed: int, device: str, log, on_row=None,
    finished=None, progress: bool = False,
) -> dict:  # fmt: skip
    """Accuracy rows at each label fraction for the backbone and the baselines; `progress`
    shows the steps of each trained row."""
    from selfsup.evaluate.baselines import random_init_backbone
    from selfsup.evaluate.knn import knn_accuracy

    train, test = labeled_splits(data, recipe, tokenizer, backbone)
    notes = [*train.notes, *test.notes]
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if "vectors_only" in baselines:  # built (and checked) before any slow work
        vectors_only = vectors_only_backbone(backbone, recipe, seed)
    if protocols is None:
        frozen_only = recipe.backbone_name == "word_vectors"
        protocols = ("linear",) if frozen_only else ("finetune", "linear")
    ft = finetune_settings(recipe)
    num_classes = len(train.classes)
    features = {}
    if {"linear", "knn"} & set(protocols):
        features["ssl"] = (
            text_features(backbone, train, device),
            text_features(backbone, test, device),
        )
    if "random_init" in baselines:
        fresh = random_init_backbone(backbone, seed)
        features["random_init"] = (
            text_features(fresh, train, device),
            text_features(fresh, test, device),
        )
    if word2vec:
        features["word2vec"] = _word2vec_features(word2vec, train.raw, test.raw, device)
    rows = []

    def record(method: str, protocol: str, f: float, n: int, fn, *args, **kwargs) -> None:
        if finished and (method, protocol, f) in finished:
            row = finished[method, protocol, f]
            rows.append(row)
            accuracy = row["accuracy"]
            log(f"{method:<12} {protocol:<9} {100 * f:g}% labels ({n}): {accuracy:.3f} (kept)")
            return
        start = time.perf_counter()
        accuracy = float(fn(*args, **kwargs))
        row = {"method": method, "protocol": protocol, "fraction": f, "n_labels": n,
               "accuracy": accuracy, "seconds": round(time.perf_counter() - start, 3)}  # fmt: skip
        rows.append(row)
        log(f"{method:<12} {protocol:<9} {100 * f:g}% labels ({n}): {accuracy:.3f}")
        if on_row is not None:
            on_row(row)

    def bar(what: str, f: float, n: int) -> str | None:
        """The label a trained row shows its steps under (StepProgress)."""
        return f"{what} {100 * f:g}% labels ({n})" if progress else None

    for f in fractions:
        idx = stratified_subset(train.labels, f, seed)
        n, labelled = len(idx), train.subset(idx)
        y = train.labels[idx]
        for method, (train_x, test_x) in features.items():
            protocol = "logreg" if method == "word2vec" else "linear"
            if method != "ssl" or "linear" in protocols:
                record(method, protocol, f, n, logistic_regression_accuracy,
                       train_x[idx], y, test_x, test.labels)  # fmt: skip
            if method == "ssl" and "knn" in protocols:
                record(method, "knn", f, n, knn_accuracy, train_x[idx], y, test_x, test.labels,
                       k=k, num_classes=num_classes)  # fmt: skip
        steps = budget_steps(n, ft["batch_size"], ft["epochs"], ft["max_steps"])
        budget = {"steps": steps, "batch_size": ft["batch_size"], "lr": ft["lr"], "seed": seed,
                  "device": device}  # fmt: skip
        if "finetune" in protocols:
            record("ssl", "finetune", f, n, finetune_text, backbone, labelled, test,
                   freeze_stages=freeze_stages, progress=bar("ssl finetune", f, n),
                   **budget)  # fmt: skip
        if "raw" in baselines:
            record("tfidf", "logreg", f, n, tfidf_accuracy, labelled, test)
        if "supervised" in baselines:
            fresh = random_init_backbone(backbone, seed)
            scratch = {**budget, "lr": ft["scratch_lr"]}
            record("supervised", "train", f, n, finetune_text, fresh, labelled, test,
                   progress=bar("supervised train", f, n), **scratch)  # fmt: skip
        if "vectors_only" in baselines:
            record("vectors_only", "finetune", f, n, finetune_text, vectors_only, labelled, test,
                   progress=bar("vectors_only finetune", f, n), **budget)  # fmt: skip
    return {
        "fractions": list(fractions),
        "rows": rows,
        "train_size": len(train),
        "test_size": len(test),
        "feature_dim": backbone.feature_dim,
        "num_classes": num_classes,
        "finetune": ft,
        **({"notes": notes} if notes else {}),
    }


def _word2vec_features(run_dir, train_texts: list[str], test_texts: list[str], device: str):
    """Averaged word vectors of another run (with that run's own tokenizer)."""
    from selfsup.runs import run_backbone

    tokenizer, vectors = load_tokenizer(run_dir), run_backbone(run_dir)
    if not hasattr(vectors, "vectors"):
        raise SelfSupError(f"--word2vec {run_dir} is not a word2vec run")
    out = []
    for texts in (train_texts, test_texts):
        data = LabeledText.build(texts, None, tokenizer, 512, encoder=False)
        out.append(text_features(vectors, data, device))
    return tuple(out)


@torch.no_grad()
def heldout_perplexity(task, tokenizer, recipe, device: str = "cpu", max_blocks: int = 512) -> dict:
    """exp(mean cross-entropy) on the held-out split: of every next token for a decoder; of
    BERT-masked tokens (15%, 80/10/10, fixed seed) for an encoder ("masked-LM perplexity")."""
    opts, spec = text_options(recipe), parse_text_spec(recipe.data)
    causal = bool(getattr(task.backbone, "causal", False))
    seq_len = int(opts["seq_len"])
    try:
        held_out = documents(spec, "test", opts)
    except NoTestSplit:
        raise NoTestSplit(f"the run's data {recipe.data} has no held-out file") from None
    first = next(held_out, None)
    if first is None:  # e.g. a plain-text file of one document: its held-out 10% is empty
        raise NoTestSplit(f"the run's data {recipe.data} has no held-out documents")
    try:
        blocks = PackedText.build(
            chain([first], held_out), tokenizer, seq_len, cls_token=not causal
        ).blocks[:max_blocks]
    except TooFewTokens:
        raise NoTestSplit(
            f"the held-out part of the run's data {recipe.data} is shorter than one block of "
            f"text.seq_len={seq_len} tokens"
        ) from None
    task = task.to(device).eval()
    total, count = 0.0, 0
    generator_state = torch.get_rng_state()
    torch.manual_seed(0)  # the same masks every evaluation
    for batch in blocks.long().split(64):
        batch = batch.to(device)
        if causal:
            logits = task.logits(batch[:, :-1])
            targets = batch[:, 1:]
        else:
            inputs, targets = mask_tokens(
                batch, tokenizer.mask_id, tokenizer.vocab_size, tokenizer.special_ids
            )
            head = getattr(task, "mlm_head", None) or task.head
            logits = head(task.backbone(inputs))
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE,
                               reduction="sum")  # fmt: skip
        total += float(loss)
        count += int((targets != IGNORE).sum())
    torch.set_rng_state(generator_state)
    return {
        "perplexity": math.exp(total / max(count, 1)),
        "kind": "next-token" if causal else "masked-token",
        "tokens": count,
        "tokenizer": f"{tokenizer.kind} ({tokenizer.vocab_size} tokens)",
    }


@torch.no_grad()
def sentence_embeddings(
    backbone, tokenizer, texts: list[str], lang: str | None, device: str = "cpu"
) -> torch.Tensor:
    """L2-normalised mean of the final hidden states over each sentence's real tokens, with the
    sentence's language embedding (XLM's sentence representation for retrieval)."""
    _check_language(tokenizer, lang)
    data = LabeledText.build(texts, None, tokenizer, backbone.max_len, encoder=True)
    lang_id = tokenizer.langs.index(lang) if lang in tokenizer.langs else 0
    backbone = backbone.to(device).eval()
    out = []
    for idx in torch.arange(len(data)).split(256):
        tokens = pad([data.texts[i] for i in idx.tolist()]).to(device)
        langs = torch.full_like(tokens, lang_id)
        out.append(F.normalize(backbone.features(tokens, pool="mean", langs=langs), dim=-1).cpu())
    return torch.cat(out)


def _check_language(tokenizer, lang: str | None) -> None:
    if tokenizer.langs and lang not in tokenizer.langs:
        # Another language's embedding would make the retrieval score meaningless.
        raise SelfSupError(
            f"retrieval: the run knows languages {', '.join(tokenizer.langs)}, not {lang!r}; "
            "give parallel files in those languages (named like X.en.gz)"
        )


def retrieval_languages(tokenizer, spec: str) -> tuple[str, str]:
    """The two languages of a parallel:A,B retrieval spec, checked against the run's."""
    parsed = parse_text_spec(spec)
    if parsed.kind != "parallel":
        raise SelfSupError(f"retrieval needs parallel:A,B data, got {spec}")
    langs = (language_of(parsed.paths[0]), language_of(parsed.paths[1]))
    for lang in langs:
        _check_language(tokenizer, lang)
    return langs


def retrieval_accuracy(backbone, tokenizer, spec: str, device: str = "cpu") -> dict:
    """Cross-lingual sentence retrieval on parallel:A,B: for each sentence, is its nearest
    neighbour (cosine) among the other language's sentences its translation? Both directions."""
    a_lang, b_lang = retrieval_languages(tokenizer, spec)
    left, right = read_parallel(*parse_text_spec(spec).paths)
    a = sentence_embeddings(backbone, tokenizer, left, a_lang, device)
    b = sentence_embeddings(backbone, tokenizer, right, b_lang, device)
    sim = a @ b.T
    target = torch.arange(len(left))
    a_to_b = float((sim.argmax(1) == target).float().mean())
    b_to_a = float((sim.argmax(0) == target).float().mean())
    return {
        f"{a_lang}->{b_lang}": a_to_b,
        f"{b_lang}->{a_lang}": b_to_a,
        "mean": (a_to_b + b_to_a) / 2,
        "sentences": len(left),
    }


def embed_texts(
    run_dir: str | Path, spec: str, split: str = "train", device: str = "cpu"
) -> tuple[torch.Tensor, list[str]]:
    """`selfsup embed` for text runs: (features of every text of a split of a tsv/csv/text
    spec, in order; each text's label, "" where it has none). Plain text gives one row per
    non-empty line of the split's documents; a table one per data row, in order."""
    from selfsup.runs import run_backbone
    from selfsup.text.build import split_texts, text_framing

    recipe, tokenizer = load_run(run_dir), load_tokenizer(run_dir)
    backbone = run_backbone(run_dir)
    # Every row, an empty text too: a row's index in the .rows.tsv is its row in the table.
    texts, labels = split_texts(spec, split, text_options(recipe))
    encoder, max_len = text_framing(backbone)
    data = LabeledText.build(texts, None, tokenizer, max_len, encoder)
    return text_features(backbone, data, device), labels


def _write(run_dir: Path, recipe, results: dict, command: str | None) -> None:
    from selfsup.evaluate.report import atomic_write, write_report

    report = write_report(
        run_dir,
        results,
        title=f"{recipe.task} on {recipe.data}",
        metrics_path=run_dir / "metrics.jsonl",
        command=command,
    )
    extra = []
    if "perplexity" in results:
        p = results["perplexity"]
        extra += ["## Held-out perplexity", "",
                  f"{p['perplexity']:.2f} ({p['kind']}, {p['tokens']} tokens, "
                  f"tokenizer {p['tokenizer']})", ""]  # fmt: skip
    if "retrieval" in results:
        r = results["retrieval"]
        pairs = ", ".join(f"{key} {value:.3f}" for key, value in r.items() if "->" in key)
        extra += ["## Cross-lingual retrieval", "",
                  f"Top-1 accuracy over {r['sentences']} sentences: {pairs}", ""]  # fmt: skip
    if extra:
        atomic_write(report, report.read_text() + "\n" + "\n".join(extra))
