"""Text downstream: few-label fine-tuning vs baselines, perplexity, retrieval, CLI."""

from __future__ import annotations

import gzip
import json
from itertools import islice
from pathlib import Path

import pytest
import torch

from selfsup.cli import main
from selfsup.errors import NoTestSplit, SelfSupError
from selfsup.recipe import Recipe
from selfsup.runs import evaluate_run, pretrain_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sst2_slice(shared_data, tmp_path_factory):
    """The first 600 SST-2 train rows and 200 dev rows (real data, small)."""
    folder = tmp_path_factory.mktemp("sst2")
    for name, rows in (("train.tsv", 600), ("dev.tsv", 200)):
        lines = (shared_data / "sst2" / name).read_text().splitlines()[: rows + 1]
        (folder / name).write_text("\n".join(lines) + "\n")
    return f"tsv:{folder}/train.tsv,{folder}/dev.tsv"


def _run(task: str, data: str, out, **evaluate):
    recipe = Recipe.from_dict(
        {
            "task": task,
            "data": data,
            "backbone_options": {} if task == "word2vec" else {"size": "tiny", "max_len": 64},
            "text": {"vocab_size": 500, "seq_len": 32},
            "train": {"steps": 6, "batch_size": 16, "lr": 3e-3, "log_every": 3},
            "evaluate": {"max_steps": 8, "epochs": 1, **evaluate},
        }
    )
    pretrain_run(recipe, out, progress=False)
    return out


def test_sst2_few_label_protocol_with_all_baselines(sst2_slice, tmp_path):
    w2v = _run("word2vec", sst2_slice, tmp_path / "w2v")
    run = _run("mlm", sst2_slice, tmp_path / "mlm")
    results = evaluate_run(
        run,
        fractions=(0.1, 1.0),
        baselines=("raw", "supervised", "random_init"),
        progress=False,
        text_options={"word2vec": str(w2v)},
    )
    methods = {(r["method"], r["protocol"]) for r in results["rows"]}
    assert methods == {
        ("ssl", "finetune"),
        ("ssl", "linear"),
        ("tfidf", "logreg"),
        ("supervised", "train"),
        ("random_init", "linear"),
        ("word2vec", "logreg"),
    }
    assert {r["n_labels"] for r in results["rows"]} == {61, 600}  # stratified per class, rounded
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in results["rows"])
    tfidf = [r["accuracy"] for r in results["rows"] if r["method"] == "tfidf"]
    assert tfidf[-1] > 0.55  # bag of words on 600 real reviews is clearly above chance
    assert results["perplexity"]["kind"] == "masked-token"
    assert 1 < results["perplexity"]["perplexity"] < 500
    report = (run / "report.md").read_text()
    assert "TF-IDF logistic regression" in report and "Held-out perplexity" in report
    assert json.loads((run / "metrics.json").read_text())["rows"]
    assert main(["embed", str(run), "--data", sst2_slice, "--split", "test",
                 "--out", str(tmp_path / "e.npy")]) == 0  # fmt: skip
    import numpy as np

    assert np.load(tmp_path / "e.npy").shape == (200, 128)
    # The word2vec run evaluates its own averaged vectors with logistic regression.
    seen: list[dict] = []
    own = evaluate_run(w2v, fractions=(1.0,), baselines=(), progress=False, on_row=seen.append)
    assert [(r["method"], r["protocol"]) for r in own["rows"]] == [("ssl", "linear")]
    assert seen == own["rows"]  # each row also reaches on_row as it is measured
    # Labels of one class only: refused before any work, as every method would score 1.0.
    train_path = sst2_slice.removeprefix("tsv:").split(",")[0]
    lines = Path(train_path).read_text().splitlines()
    positives = [line for line in lines if line.endswith("\t1")]
    (tmp_path / "one.tsv").write_text("\n".join(lines[:1] + positives))
    with pytest.raises(SelfSupError, match="single class"):
        evaluate_run(run, data=f"tsv:{tmp_path / 'one.tsv'},{train_path}", progress=False)


def test_frozen_lower_layers_are_not_trained(sst2_slice, tmp_path):
    from selfsup.runs import run_backbone
    from selfsup.text.build import labeled_text, text_options
    from selfsup.text.finetune import finetune_text
    from selfsup.text.tokenizer import load_tokenizer

    run = _run("clm", sst2_slice, tmp_path / "clm")
    backbone, tokenizer = run_backbone(run), load_tokenizer(run)
    opts = text_options(Recipe.from_dict({"text": {}}))
    train = labeled_text(sst2_slice, "train", tokenizer, opts, encoder=False, max_len=64)
    test = labeled_text(sst2_slice, "test", tokenizer, opts, encoder=False, max_len=64)
    assert (train.get_batch(torch.arange(4))["tokens"][:, 0] != tokenizer.cls_id).all()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    accuracy = finetune_text(backbone, train, test, steps=5, freeze_stages=2)
    assert 0.0 <= accuracy <= 1.0
    # The caller's backbone is untouched (fine-tuning trains a copy).
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())


def test_tlm_retrieval_and_cli(shared_data, tmp_path, capsys):
    d = shared_data / "multi30k"
    test_en, test_de = tmp_path / "t.en.gz", tmp_path / "t.de.gz"
    for src, dst in (
        (d / "test_2016_flickr.en.gz", test_en),
        (d / "test_2016_flickr.de.gz", test_de),
    ):
        with gzip.open(src, "rt") as f_in, gzip.open(dst, "wt") as f_out:
            f_out.writelines(islice(f_in, 100))
    run = tmp_path / "tlm"
    code = main(
        [
            "pretrain", "--task", "tlm", "--data", f"parallel:{d}/val.en.gz,{d}/val.de.gz",
            "--set", "backbone_options={size: tiny}",
            "--set", "text={vocab_size: 500, seq_len: 64}",
            "--steps", "4", "--batch-size", "16", "--out", str(run), "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    code = main(["evaluate", str(run), "--retrieval", f"parallel:{test_en},{test_de}",
                 "--no-progress"])  # fmt: skip
    assert code == 0
    retrieval = json.loads((run / "metrics.json").read_text())["retrieval"]
    assert retrieval["sentences"] == 100 and 0.0 <= retrieval["en->de"] <= 1.0
    assert set(retrieval) == {"en->de", "de->en", "mean", "sentences"}
    capsys.readouterr()
    assert main(["tasks"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("mlm ", "nsp ", "mlm+nsp", "clm ", "tlm ", "word2vec"))
    assert main(["generate", str(run)]) == 2  # a tlm run cannot generate: one-line error
    assert "not a clm run" in capsys.readouterr().err
    test_fr = tmp_path / "t.fr.gz"
    test_fr.write_bytes(test_de.read_bytes())
    code = main(["evaluate", str(run), "--retrieval", f"parallel:{test_en},{test_fr}",
                 "--no-progress"])  # fmt: skip
    assert code == 2  # no silent fallback to another language's embedding
    assert "knows languages en, de, not 'fr'" in capsys.readouterr().err


def test_a_transformer_can_start_from_a_word2vec_runs_tokenizer_and_vectors(sst2_slice, tmp_path):
    from selfsup.runs import run_backbone
    from selfsup.text.tokenizer import load_tokenizer

    dim = 32
    w2v_recipe = {
        "task": "word2vec",
        "data": sst2_slice,
        "backbone_options": {"dim": dim},
        "text": {"vocab_size": 500, "seq_len": 32},
        "train": {"steps": 4, "batch_size": 16, "lr": 3e-3, "log_every": 2},
    }
    pretrain_run(Recipe.from_dict(w2v_recipe), tmp_path / "w2v", progress=False)
    vectors = run_backbone(tmp_path / "w2v").vectors.weight.detach()

    mlm_recipe = {
        "task": "mlm",
        "data": sst2_slice,
        "backbone_options": {"dim": dim, "depth": 1, "heads": 2, "max_len": 64},
        # vocab_size differs on purpose: the word2vec run's tokenizer is used as it is.
        "text": {"vocab_size": 300, "seq_len": 32, "word_vectors": str(tmp_path / "w2v")},
        "train": {"steps": 1, "batch_size": 8, "lr": 1e-6, "log_every": 1},
    }
    pretrain_run(Recipe.from_dict(mlm_recipe), tmp_path / "mlm", progress=False)
    vocab = [load_tokenizer(tmp_path / run).tokenizer.get_vocab() for run in ("mlm", "w2v")]
    assert vocab[0] == vocab[1]
    started = run_backbone(tmp_path / "mlm").embed.tokens.weight.detach()
    # Same directions (every token's vector a positive multiple of word2vec's), rescaled.
    cosine = torch.nn.functional.cosine_similarity(started, vectors, dim=1)
    assert cosine.min() > 0.999
    assert abs(float(started.std()) - 0.02) < 1e-3

    with pytest.raises(SelfSupError, match="word2vec run"):
        wrong = dict(mlm_recipe, text=dict(mlm_recipe["text"], word_vectors=str(tmp_path / "mlm")))
        pretrain_run(Recipe.from_dict(wrong), tmp_path / "mlm2", progress=False)
    with pytest.raises(SelfSupError, match="dim to 32"):
        wider = dict(mlm_recipe, backbone_options=dict(mlm_recipe["backbone_options"], dim=48))
        pretrain_run(Recipe.from_dict(wider), tmp_path / "mlm3", progress=False)

    # freeze_word_vectors: the vectors stay exactly as started while the blocks learn.
    frozen = dict(mlm_recipe, text=dict(mlm_recipe["text"], freeze_word_vectors=True),
                  train=dict(mlm_recipe["train"], steps=3, lr=1e-2),
                  evaluate={"max_steps": 4, "epochs": 1})  # fmt: skip
    pretrain_run(Recipe.from_dict(frozen), tmp_path / "frozen", progress=False)
    kept, moved = run_backbone(tmp_path / "frozen"), run_backbone(tmp_path / "mlm")
    assert torch.equal(kept.embed.tokens.weight, vectors * (0.02 / vectors.std()))
    block = "blocks.0.attn.qkv.weight"
    assert not torch.allclose(kept.state_dict()[block], moved.state_dict()[block], atol=1e-4)
    # tie_output=False: the output layer starts from the vectors and learns; the inputs stay.
    from selfsup.engine import CHECKPOINT, load_checkpoint

    untied = dict(frozen, task_options={"tie_output": False})
    pretrain_run(Recipe.from_dict(untied), tmp_path / "untied", progress=False)
    for run, tied in (("frozen", True), ("untied", False)):
        weights = load_checkpoint(tmp_path / run / CHECKPOINT)["task"]
        inputs, outputs = weights["backbone.embed.tokens.weight"], weights["head.embedding.weight"]
        assert torch.equal(inputs, vectors * (0.02 / vectors.std()))
        assert torch.equal(outputs, inputs) == tied
    with pytest.raises(SelfSupError, match="name the word2vec run"):
        alone = dict(mlm_recipe, text={"vocab_size": 300, "freeze_word_vectors": True})
        pretrain_run(Recipe.from_dict(alone), tmp_path / "mlm4", progress=False)

    # The vectors_only baseline: the same Transformer with the vectors and random blocks.
    from selfsup.evaluate.baselines import random_init_backbone
    from selfsup.text.build import vectors_only_backbone

    twin = vectors_only_backbone(kept, Recipe.from_dict(frozen), seed=3)
    assert torch.equal(twin.embed.tokens.weight, vectors * (0.02 / vectors.std()))
    assert torch.equal(twin.state_dict()[block], random_init_backbone(kept, 3).state_dict()[block])
    results = evaluate_run(
        tmp_path / "frozen", data=sst2_slice, protocols=("finetune",), fractions=(0.1,),
        baselines=("vectors_only",), progress=False,
    )  # fmt: skip
    rows = {(row["method"], row["protocol"]) for row in results["rows"]}
    assert rows == {("ssl", "finetune"), ("vectors_only", "finetune")}
    with pytest.raises(SelfSupError, match="needs a run started from word vectors"):
        vectors_only_backbone(kept, Recipe.from_dict(dict(mlm_recipe, text={"vocab_size": 300})))


def test_cross_validated_logistic_regressions_fit_the_labels():
    from selfsup.text.data import LabeledText
    from selfsup.text.finetune import logistic_regression_accuracy, tfidf_accuracy

    generator = torch.Generator().manual_seed(0)
    y = torch.arange(80) % 2
    x = torch.randn(80, 20, generator=generator)
    x[:, 0] += 3.0 * (2 * y - 1)  # one informative feature among noise
    for choose_c in (False, True):
        accuracy = logistic_regression_accuracy(x[:60], y[:60], x[60:], y[60:], choose_c=choose_c)
        assert accuracy >= 0.95

    words = {0: ["dull", "boring", "awful", "bad"], 1: ["great", "moving", "fine", "good"]}
    texts = [f"a {words[i % 2][i % 4]} film {i}" for i in range(40)]
    labels = torch.tensor([i % 2 for i in range(40)])

    def table(rows: slice) -> LabeledText:
        return LabeledText(raw=texts[rows], labels=labels[rows], texts=None, classes=["0", "1"])

    assert tfidf_accuracy(table(slice(0, 30)), table(slice(30, 40)), choose_c=True) == 1.0


def test_unlabelled_text_run_says_the_table_needs_labels_and_embed_keeps_labels(
    sst2_slice, tmp_path, capsys
):
    from selfsup.runs import embed_run

    train_path, dev_path = sst2_slice.removeprefix("tsv:").split(",")
    sentences = [line.split("\t")[0] for line in Path(train_path).read_text().splitlines()[1:]]
    (tmp_path / "corpus.txt").write_text("\n\n".join(sentences) + "\n")  # a document each
    run = _run("mlm", f"text:{tmp_path / 'corpus.txt'}", tmp_path / "mlm")
    results = evaluate_run(run, fractions=(0.1,), progress=False)
    assert "perplexity" in results and not results.get("rows")
    assert "--data tsv:TRAIN,TEST" in capsys.readouterr().err
    assert "no few-label table" in (run / "report.md").read_text()
    from selfsup.cli import main

    assert main(["evaluate", str(run), "--no-progress"]) == 0  # the one number, on the terminal
    assert "held-out perplexity: " in capsys.readouterr().out
    _, names, counts = embed_run(run, sst2_slice, tmp_path / "e.npy", split="test")
    rows = [line.split("\t") for line in names.read_text().splitlines()[1:]]
    labels = [line.split("\t")[1] for line in Path(dev_path).read_text().splitlines()[1:]]
    assert counts == {"test": 200} and [row[2] for row in rows] == labels


def test_a_run_whose_data_has_no_held_out_part_is_evaluated_without_perplexity(
    sst2_slice, tmp_path, capsys
):
    from selfsup.runs import embed_run
    from selfsup.text.build import trained_text_task
    from selfsup.text.evaluate import heldout_perplexity

    train_path = sst2_slice.removeprefix("tsv:").split(",")[0]
    run = _run("mlm", f"tsv:{train_path}", tmp_path / "mlm")
    results = evaluate_run(
        run, data=sst2_slice, fractions=(0.1,), protocols=("linear",), baselines=("raw",),
        progress=False,
    )  # fmt: skip
    assert len(results["rows"]) == 2 and "perplexity" not in results
    assert "no held-out perplexity" in capsys.readouterr().err
    assert "no held-out file" in (run / "report.md").read_text()
    # A plain-text file of one document has an empty held-out 10%.
    one_doc = tmp_path / "one.txt"
    one_doc.write_text("a single document\nof two lines\n")
    task, tokenizer = trained_text_task(run)
    recipe = Recipe.from_dict({"task": "mlm", "data": f"text:{one_doc}", "text": {"seq_len": 32}})
    with pytest.raises(NoTestSplit, match="no held-out documents"):
        heldout_perplexity(task, tokenizer, recipe)
    # embed keeps a row with empty text, so each row's index is its row in the table.
    table = tmp_path / "gaps.tsv"
    table.write_text("sentence\tlabel\ngood fun\t1\n\t0\ndull\t0\n")
    _, names, counts = embed_run(run, f"tsv:{table}", tmp_path / "e.npy", split="train")
    rows = [line.split("\t") for line in names.read_text().splitlines()[1:]]
    assert counts == {"train": 3} and [(r[1], r[2]) for r in rows] == [
        ("0", "1"), ("1", "0"), ("2", "0")
    ]  # fmt: skip


def test_evaluation_leaves_out_rows_without_labels_and_names_the_runs_columns(
    sst2_slice, tmp_path, capsys
):
    from selfsup.text.build import labeled_splits, text_options
    from selfsup.text.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(["good fun", "dull film"] * 20, "wordpiece", vocab_size=200)
    recipe = Recipe.from_dict({"task": "mlm", "data": sst2_slice, "text": {"seq_len": 32}})
    train, test = tmp_path / "tr.tsv", tmp_path / "te.tsv"
    train.write_text("sentence\tlabel\ngood fun\t1\nmeh\t\ndull film\t0\nok\t \n")
    test.write_text("sentence\tlabel\ngood\t1\nunlabelled\t\n")
    backbone = torch.nn.Module()
    a, b = labeled_splits(f"tsv:{train},{test}", recipe, tokenizer, backbone)
    assert a.raw == ["good fun", "dull film"] and a.classes == ["0", "1"] and b.raw == ["good"]
    assert a.notes == (f"{train}: left out 2 row(s) with an empty label",)
    assert b.notes == (f"{test}: left out 1 row(s) with an empty label",)
    train.write_text("body\tlabel\ngood\t1\n")
    with pytest.raises(SelfSupError, match=r"has no text column .*column names from its recipe.*"
                       r"set at pretraining\), so name this table's columns") as error:  # fmt: skip
        labeled_splits(f"tsv:{train},{test}", recipe, tokenizer, backbone)
    assert "set text.text_column" not in str(error.value)
    assert text_options(recipe)["text_column"] is None
