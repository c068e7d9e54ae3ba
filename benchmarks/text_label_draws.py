"""Few-label text accuracy over several draws of the labelled subset: mean, spread, paired gaps.

    python benchmarks/text_label_draws.py --word2vec sst2_word2vec --finetune sst2_clm_long \
        --labels 1% --draws 10

At 1% of SST-2 (674 sentences) the accuracy of one method on the 872 dev sentences moves by a
few points with the draw of the labelled sentences alone, as much as the gaps the text table
reads. So, for each draw (seed 0 .. N-1; stratified subsets exactly as `selfsup evaluate
--seed S` draws them, seed 0 being the table's):

- TF-IDF of words and bigrams + logistic regression (the evaluation's `tfidf` row);
- each --word2vec run's averaged vectors + logistic regression (its `linear` row);
- each --finetune run fine-tuned with the evaluation's budget and learning rate (its `finetune`
  row), and, once, the first such run's Transformer trained from scratch (the `supervised` row).

`--untrained` fine-tunes each --finetune run's architecture freshly initialised instead (its
token embeddings started from the run's `word_vectors` if its recipe names them): what
pretraining added. `--freeze-stages K` fine-tunes the pretrained runs with their first K
stages fixed (1: the token embeddings), as `selfsup evaluate --freeze-stages` does.
`--choose-c`: every logistic regression (TF-IDF's too) picks its C by 5-fold cross-validation
on the labelled sentences (selfsup.text.finetune.C_GRID) instead of the evaluation's fixed C (1
on standardised features, 10 for TF-IDF).

Runs are runs/bench/NAME (or a path). Prints every draw, then per method the mean and standard
deviation over draws and the paired difference against TF-IDF and against the from-scratch
Transformer (mean and its standard error over draws): the draws are shared, so the paired
difference cancels how easy a draw was.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from run_benchmarks import bench_run, paired_gap, untrained_twin  # benchmarks/, this folder

from selfsup.evaluate.baselines import random_init_backbone
from selfsup.evaluate.labels import stratified_subset
from selfsup.recipe import load_run
from selfsup.runs import run_backbone
from selfsup.text.build import labeled_splits
from selfsup.text.evaluate import finetune_settings
from selfsup.text.finetune import (
    budget_steps,
    finetune_text,
    logistic_regression_accuracy,
    text_features,
    tfidf_accuracy,
)
from selfsup.text.tokenizer import load_tokenizer

SST2 = "tsv:../shared/data/sst2/train.tsv,../shared/data/sst2/dev.tsv"


def load_text_run(path: Path, data: str):
    """(backbone, train, test, recipe) with the run's own tokenizer."""
    recipe, tokenizer, backbone = load_run(path), load_tokenizer(path), run_backbone(path)
    return (backbone, *labeled_splits(data, recipe, tokenizer, backbone), recipe)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--word2vec", nargs="*", default=[], help="word2vec runs (linear probe)")
    parser.add_argument("--finetune", nargs="*", default=[], help="Transformer runs to fine-tune")
    parser.add_argument("--data", default=SST2, help="labelled tsv:TRAIN,TEST (default SST-2)")
    parser.add_argument("--labels", default="1%", help="one label fraction, e.g. 1%%")
    parser.add_argument("--draws", type=int, default=10, help="label draws (seeds 0..N-1)")
    parser.add_argument(
        "--choose-c", action="store_true", help="cross-validate C of every logistic regression"
    )
    parser.add_argument(
        "--untrained", action="store_true", help="fine-tune the --finetune runs' untrained twins"
    )
    parser.add_argument(
        "--freeze-stages", type=int, default=0, help="fine-tuning keeps the first K stages fixed"
    )
    args = parser.parse_args()
    fraction = float(args.labels.rstrip("%")) / 100
    accuracy: dict[str, list[float]] = {}

    def record(method: str, seed: int, value: float, started: float) -> None:
        accuracy.setdefault(method, []).append(value)
        print(f"draw {seed}  {method:<28} {value:.3f}  ({time.perf_counter() - started:.0f} s)",
              flush=True)  # fmt: skip

    if args.draws < 2:
        raise SystemExit("--draws must be at least 2 (the spread needs two draws)")
    if not args.word2vec and not args.finetune:
        raise SystemExit("give at least one --word2vec or --finetune run")
    frozen = {}
    for name in args.word2vec:
        backbone, train, test, _ = load_text_run(bench_run(name), args.data)
        frozen[f"word2vec {name}"] = (
            text_features(backbone, train), text_features(backbone, test), train, test
        )  # fmt: skip
    tuned = {name: load_text_run(bench_run(name), args.data) for name in args.finetune}
    if args.untrained:
        tuned = {
            f"{name} (untrained)": (untrained_twin(backbone, recipe), *rest, recipe)
            for name, (backbone, *rest, recipe) in tuned.items()
        }
    # Every run reads the same sentences in the same order; TF-IDF reads their raw strings.
    train, test = next(iter(frozen.values()))[2:] if frozen else next(iter(tuned.values()))[1:3]

    for seed in range(args.draws):
        idx = stratified_subset(train.labels, fraction, seed)
        started = time.perf_counter()
        tfidf = tfidf_accuracy(train.subset(idx), test, choose_c=args.choose_c)
        record("tfidf", seed, tfidf, started)
        for method, (train_x, test_x, run_train, run_test) in frozen.items():
            started = time.perf_counter()
            value = logistic_regression_accuracy(
                train_x[idx], run_train.labels[idx], test_x, run_test.labels,
                choose_c=args.choose_c,
            )  # fmt: skip
            record(method, seed, value, started)
        for position, (name, (backbone, run_train, run_test, recipe)) in enumerate(tuned.items()):
            ft = finetune_settings(recipe)
            steps = budget_steps(len(idx), ft["batch_size"], ft["epochs"], ft["max_steps"])
            budget = {"steps": steps, "batch_size": ft["batch_size"], "seed": seed}
            started = time.perf_counter()
            value = finetune_text(backbone, run_train.subset(idx), run_test, lr=ft["lr"],
                                  freeze_stages=args.freeze_stages, **budget)  # fmt: skip
            record(f"fine-tuned {name}", seed, value, started)
            if position == 0:
                fresh = random_init_backbone(backbone, seed)
                started = time.perf_counter()
                value = finetune_text(fresh, run_train.subset(idx), run_test,
                                      lr=ft["scratch_lr"], **budget)  # fmt: skip
                record("from scratch", seed, value, started)

    print(f"\n{args.labels} labels ({len(idx)}), {args.draws} draws\n")
    print("| method | mean | sd | minus TF-IDF (± se) | minus from scratch (± se) |")
    print("|---|---:|---:|---:|---:|")
    for method, values in accuracy.items():
        cells = [f"{statistics.mean(values):.3f}", f"{statistics.stdev(values):.3f}"]
        for other in ("tfidf", "from scratch"):
            if other not in accuracy or other == method:
                cells.append("")
                continue
            cells.append(paired_gap(values, accuracy[other]))
        print(f"| {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
