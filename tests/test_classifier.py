"""The classifier a user keeps: `selfsup finetune` saves it, `selfsup predict` applies it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

import selfsup
import selfsup.classifier
from selfsup.classifier import HEAD, TextClassifier, finetune_run, load_classifier, predict
from selfsup.cli import main
from selfsup.errors import SelfSupError
from selfsup.recipe import Recipe, save_recipe
from selfsup.runs import pretrain_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A rotation run on scikit-learn's digits: a few steps, a narrow backbone."""
    out = tmp_path_factory.mktemp("clf") / "run"
    recipe = Recipe(
        task="rotation",
        data="digits",
        backbone_options={"width": 8},
        train={"steps": 20, "batch_size": 32, "num_workers": 0},
    )
    pretrain_run(recipe, out, progress=False)
    return out


def _digit_folder(root, count: int = 40):
    """The first `count` digits as 24 px PNGs in class folders: real images of a user's own."""
    digits = load_digits()
    for i in range(count):
        pixels = (digits.images[i] * 255 / 16).astype(np.uint8)
        folder = root / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).resize((24, 24)).save(folder / f"{i}.png")
    return root


def test_the_saved_classifier_scores_its_held_out_images_as_fine_tuning_measured(run, tmp_path):
    info = finetune_run(run, tmp_path / "clf", steps=40, progress=False)
    saved = json.loads((tmp_path / "clf" / "classifier.json").read_text())
    assert saved["classes"] == [str(d) for d in range(10)] and saved["steps"] == 40
    assert saved["train_images"] == 1347 and saved["test_images"] == 450
    assert saved["pretraining_steps"] == 20
    assert info["test_accuracy"] == saved["test_accuracy"] > 0.5  # ten classes: chance is 0.1
    # Loaded back and applied to the same held-out split, it gets the same accuracy: the
    # saved weights and predict's preprocessing are those fine-tuning measured.
    done = predict(tmp_path / "clf", "digits", tmp_path / "test.csv", split="test")
    assert done["rows"] == done["labelled"] == 450
    assert done["accuracy"] == pytest.approx(saved["test_accuracy"], abs=1e-9)
    with open(tmp_path / "test.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 450 and all(r["split"] == "test" for r in rows)
    for r in rows[:20]:
        probabilities = [float(r[f"p({d})"]) for d in range(10)]
        assert abs(sum(probabilities) - 1) < 2e-3
        assert float(r["probability"]) == max(probabilities)
        assert r["predicted"] == str(int(np.argmax(probabilities)))
    right = sum(r["label"] == r["predicted"] for r in rows)
    assert right / 450 == pytest.approx(done["accuracy"])


def test_frozen_stages_and_the_backbone_it_started_from_are_kept_as_trained(run, tmp_path):
    from selfsup.runs import run_backbone

    finetune_run(run, tmp_path / "clf", freeze_stages=4, steps=10, progress=False)
    clf = load_classifier(tmp_path / "clf")
    pretrained = run_backbone(run)
    # Every stage frozen: the backbone is the pretrained one, and the head alone was trained.
    for (name, kept), original in zip(clf.backbone.state_dict().items(),
                                      pretrained.state_dict().values(), strict=True):  # fmt: skip
        assert torch.equal(kept, original), name
    finetune_run(run, tmp_path / "whole", steps=10, progress=False)
    whole = load_classifier(tmp_path / "whole").backbone.state_dict()
    assert any(not torch.equal(whole[k], v) for k, v in pretrained.state_dict().items())


def test_the_linear_protocol_keeps_the_backbone_and_evaluates_linear_probe(run, tmp_path):
    from selfsup.evaluate import extract_features
    from selfsup.evaluate.linear import linear_probe_accuracy
    from selfsup.recipe import load_run
    from selfsup.runs import backbone_data, run_backbone

    with pytest.raises(SelfSupError, match="linear protocol .* --steps, --freeze-stages do not"):
        finetune_run(run, tmp_path / "x", protocol="linear", steps=5, freeze_stages=1)
    with pytest.raises(SelfSupError, match="unknown protocol 'knn'"):
        finetune_run(run, tmp_path / "x", protocol="knn")
    assert not (tmp_path / "x").exists()
    info = finetune_run(run, tmp_path / "clf", protocol="linear", progress=False)
    assert info["protocol"] == "linear" and info["steps"] is None
    clf = load_classifier(tmp_path / "clf")
    pretrained = run_backbone(run)
    for name, weight in pretrained.state_dict().items():
        assert torch.equal(clf.backbone.state_dict()[name], weight), name
    # The saved layer (standardisation folded in) scores what evaluate's linear probe scores
    # on the same features, and predict reproduces it from the files.
    recipe = load_run(run)
    train, test = (backbone_data(recipe, split, None, pretrained) for split in ("train", "test"))
    probe = linear_probe_accuracy(extract_features(pretrained, train), train.labels,
                                  extract_features(pretrained, test), test.labels)  # fmt: skip
    assert abs(info["test_accuracy"] - probe) <= 2 / len(test)
    done = predict(tmp_path / "clf", "digits", tmp_path / "test.csv", split="test")
    assert abs(done["accuracy"] - info["test_accuracy"]) <= 1 / len(test)


def test_predict_labels_a_users_folders_from_files_and_python(run, tmp_path, capsys):
    _digit_folder(tmp_path / "labelled")
    code = main(["finetune", str(run), "--data", f"folder:{tmp_path / 'labelled'}",
                 "--out", str(tmp_path / "clf"), "--epochs", "2", "--no-progress"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "accuracy on the" in out and "next: selfsup predict" in out

    flat = tmp_path / "flat"
    flat.mkdir()
    for png in sorted((tmp_path / "labelled").rglob("*.png"))[:7]:
        (flat / f"{png.parent.name}_{png.name}").write_bytes(png.read_bytes())
    code = main(["predict", str(tmp_path / "clf"), "--data", f"folder:{flat}",
                 "--out", str(tmp_path / "p.csv")])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0 and "(7 images)" in out, err
    with open(tmp_path / "p.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["label"] for r in rows] == [""] * 7  # a flat folder has no labels
    clf = selfsup.load_classifier(tmp_path / "clf")
    files = [r["file"] for r in rows]
    names, _ = clf.predict(selfsup.prepare_images(files, clf.backbone.config))
    assert names == [r["predicted"] for r in rows]  # the CLI and the Python API agree
    assert set(clf.classes) == {p.name for p in (tmp_path / "labelled").iterdir()}


def test_bad_input_is_one_line_and_nothing_is_overwritten(run, tmp_path, capsys):
    finetune_run(run, tmp_path / "clf", steps=2, progress=False)
    before = (tmp_path / "clf" / HEAD).read_bytes()
    with pytest.raises(SelfSupError, match="already holds a classifier"):
        finetune_run(run, tmp_path / "clf", steps=2, progress=False)
    assert (tmp_path / "clf" / HEAD).read_bytes() == before
    with pytest.raises(SelfSupError, match="no classifier.json: it is a pretraining run"):
        predict(run, "digits", tmp_path / "p.csv")
    with pytest.raises(SelfSupError, match="give steps or epochs, not both"):
        finetune_run(run, tmp_path / "x", steps=2, epochs=2)
    with pytest.raises(SelfSupError, match="lr must be above 0"):
        finetune_run(run, tmp_path / "x", lr=0.0)
    with pytest.raises(SelfSupError, match="keep image and text classifiers; .* is clips"):
        finetune_run(run, tmp_path / "x", data="moving-mnist:somewhere")
    with pytest.raises(SelfSupError, match="pretrained on images .* is text"):
        finetune_run(run, tmp_path / "x", data="text:corpus.txt")
    assert not (tmp_path / "x").exists()
    with pytest.raises(SelfSupError, match="is an image classifier but text:x.txt is text"):
        predict(tmp_path / "clf", "text:x.txt", tmp_path / "p.csv")

    # A classifier.json from before text classifiers (no "kind") is an image classifier.
    description = json.loads((tmp_path / "clf" / "classifier.json").read_text())
    assert description.pop("kind") == "image"
    (tmp_path / "clf" / "classifier.json").write_text(json.dumps(description))
    assert type(load_classifier(tmp_path / "clf")) is selfsup.classifier.Classifier

    (tmp_path / "clf" / HEAD).write_bytes(before[:40])
    code = main(["predict", str(tmp_path / "clf"), "--data", "digits", "--out",
                 str(tmp_path / "p.csv")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "head.safetensors is missing or corrupt" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "p.csv").exists()


def test_a_folder_is_fine_tuned_at_the_size_predict_reads_it(run, tmp_path):
    # The digits run has no image_size in its recipe (its backbone takes 8 px); a folder of
    # 24 px PNGs used to be fine-tuned at the folder default of 32 px while predict and
    # prepare_images resize to the backbone's 8 px, so predict scored other pixels.
    _digit_folder(tmp_path / "labelled", count=100)
    data = f"folder:{tmp_path / 'labelled'}"
    info = finetune_run(run, tmp_path / "clf", data=data, steps=20, progress=False)
    clf = load_classifier(tmp_path / "clf")
    assert info["image_size"] == clf.backbone.config["image_size"] == 8
    done = predict(tmp_path / "clf", data, tmp_path / "test.csv", split="test")
    assert done["labelled"] == info["test_images"]
    assert done["accuracy"] == pytest.approx(info["test_accuracy"], abs=1e-9)


def test_finetune_never_overwrites_a_backbone_or_a_run_it_did_not_write(run, tmp_path):
    before = {p.name: p.read_bytes() for p in (run / "backbone").iterdir()}
    for out, message in ((run / "backbone", "holds a backbone .* would overwrite"),
                         (run, "is a pretraining run")):  # fmt: skip
        with pytest.raises(SelfSupError, match=message):
            finetune_run(run, out, steps=2, progress=False)
    assert {p.name: p.read_bytes() for p in (run / "backbone").iterdir()} == before
    assert not (run / "classifier.json").exists()
    # An unfinished save of finetune's own (no classifier.json yet) is written over.
    finetune_run(run, tmp_path / "clf", steps=2, progress=False)
    (tmp_path / "clf" / "classifier.json").unlink()
    finetune_run(run, tmp_path / "clf", steps=2, progress=False)
    assert (tmp_path / "clf" / "classifier.json").is_file()


def test_a_file_in_the_way_of_out_is_one_line_before_any_work(run, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    finetune_run(run, tmp_path / "clf", steps=2, progress=False)
    for argv in (["finetune", str(run), "--out", str(tmp_path / "notes.txt" / "clf"),
                  "--steps", "2", "--no-progress"],
                 ["predict", str(tmp_path / "clf"), "--data", "digits",
                  "--out", str(tmp_path / "notes.txt" / "p.csv")]):  # fmt: skip
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and "notes.txt is a file, not a folder" in err, err
        assert len(err.strip().splitlines()) == 1
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    code = main(["predict", str(tmp_path / "nowhere"), "--data", "digits",
                 "--out", str(tmp_path / "p.csv")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and f"classifier folder {tmp_path / 'nowhere'} does not exist" in err


def test_labels_that_are_no_class_of_the_classifier_are_named(run, tmp_path, capsys):
    _digit_folder(tmp_path / "labelled")
    finetune_run(run, tmp_path / "clf", data=f"folder:{tmp_path / 'labelled'}", steps=2,
                 progress=False)  # fmt: skip
    # The same images under other class names (a user's spelling): every row counts as wrong,
    # and predict says why.
    for folder in (tmp_path / "labelled").iterdir():
        folder.rename(tmp_path / "labelled" / f"digit {folder.name}")
    code = main(["predict", str(tmp_path / "clf"), "--data", f"folder:{tmp_path / 'labelled'}",
                 "--out", str(tmp_path / "p.csv")])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0 and "0.000 right of the 40 with labels" in out
    assert "note: labels digit 0, digit 1, " in err
    assert "are none of the classifier's classes (0, 1, 2, " in err
    # A flat folder to fine-tune on: the fix is labels, not a test split.
    flat = tmp_path / "flat"
    flat.mkdir()
    for png in sorted((tmp_path / "labelled").rglob("*.png"))[:5]:
        (flat / png.name).write_bytes(png.read_bytes())
    with pytest.raises(SelfSupError, match="fine-tuning needs labels"):
        finetune_run(run, tmp_path / "x", data=f"folder:{flat}", steps=2, progress=False)


# Text classifiers: a tiny MLM pretrained on SST-2 sentences, fine-tuned on a slice of them.


@pytest.fixture(scope="module")
def text_run(shared_data, tmp_path_factory):
    """A tiny mlm run on the first 600 SST-2 training sentences: 12 steps."""
    sst2 = shared_data / "sst2"
    out = tmp_path_factory.mktemp("text_clf") / "run"
    recipe = Recipe.from_dict(
        {
            "task": "mlm",
            "data": f"tsv:{sst2 / 'train.tsv'},{sst2 / 'dev.tsv'}",
            "backbone_options": {"size": "tiny", "dropout": 0.0},
            "text": {"vocab_size": 600, "seq_len": 32, "limit": 600},
            "train": {"steps": 12, "batch_size": 16, "lr": 3e-3, "num_workers": 0},
        }
    )
    pretrain_run(recipe, out, progress=False)
    return out


@pytest.fixture(scope="module")
def sst2_slice(shared_data, tmp_path_factory):
    """tsv:TRAIN,TEST of 300 SST-2 training and 100 validation sentences (real labelled text)."""
    folder = tmp_path_factory.mktemp("sst2_slice")
    for name, source, rows in (("train.tsv", "train.tsv", 300), ("test.tsv", "dev.tsv", 100)):
        lines = (shared_data / "sst2" / source).read_text().splitlines()[: rows + 1]
        (folder / name).write_text("\n".join(lines) + "\n")
    return f"tsv:{folder / 'train.tsv'},{folder / 'test.tsv'}"


def _rows(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_saved_text_classifier_scores_its_held_out_texts_as_fine_tuning_measured(
    text_run, sst2_slice, tmp_path
):
    info = finetune_run(text_run, tmp_path / "clf", data=sst2_slice, steps=30, lr=1e-3,
                        progress=False)  # fmt: skip
    saved = json.loads((tmp_path / "clf" / "classifier.json").read_text())
    assert saved["kind"] == "text" and saved["classes"] == ["0", "1"]
    assert saved["train_texts"] == 300 and saved["test_texts"] == 100 and saved["steps"] == 30
    assert saved["text"]["encoder"] is True and saved["pretraining_steps"] == 12
    assert (tmp_path / "clf" / "tokenizer.json").is_file()
    assert info["test_accuracy"] == saved["test_accuracy"]
    # Loaded back, the classifier labels the same held-out split with exactly that accuracy:
    # the saved weights, tokenizer and framing are those fine-tuning scored.
    done = predict(tmp_path / "clf", sst2_slice, tmp_path / "test.csv", split="test")
    assert done["kind"] == "text" and done["rows"] == done["labelled"] == 100
    assert done["accuracy"] == saved["test_accuracy"]
    rows = _rows(tmp_path / "test.csv")
    assert list(rows[0])[:6] == ["split", "index", "label", "text", "predicted", "probability"]
    lines = Path(sst2_slice.split(",")[1]).read_text().splitlines()[1:]
    test_texts = [line.split("\t")[0].strip() for line in lines]  # tables are read stripped
    assert [r["text"] for r in rows] == [t[:200] for t in test_texts]
    for r in rows:
        probabilities = [float(r["p(0)"]), float(r["p(1)"])]
        assert abs(sum(probabilities) - 1) < 2e-3
        assert r["predicted"] == str(int(np.argmax(probabilities)))
    assert len({r["p(1)"] for r in rows}) > 20  # each text its own probabilities
    # From Python: strings in, names and probabilities out, as the CSV has them.
    clf = selfsup.load_classifier(tmp_path / "clf")
    assert isinstance(clf, TextClassifier)
    names, probabilities = clf.predict(test_texts[:7])
    assert names == [r["predicted"] for r in rows[:7]] and probabilities.shape == (7, 2)


def test_predict_labels_a_text_file_and_an_unlabelled_table(text_run, sst2_slice, tmp_path):
    finetune_run(text_run, tmp_path / "clf", data=sst2_slice, steps=5, progress=False)
    texts = ["a gorgeous , witty , seductive movie .", "", "the plot is nothing but boilerplate",
             "   ", "a " * 300 + "long one"]  # fmt: skip
    (tmp_path / "new.txt").write_text("\n".join(texts) + "\n")
    done = predict(tmp_path / "clf", f"text:{tmp_path / 'new.txt'}", tmp_path / "lines.csv")
    rows = _rows(tmp_path / "lines.csv")
    # One row per non-empty line, none labelled; the text column keeps 200 characters.
    assert done["rows"] == 3 and done["accuracy"] is None and done["labelled"] == 0
    assert [r["label"] for r in rows] == ["", "", ""]
    assert [r["text"] for r in rows] == [texts[0], texts[2], texts[4].strip()[:200]]

    # A table without a label column, and one with some labels (scored by class name).
    (tmp_path / "new.tsv").write_text("sentence\n" + "\n".join([texts[0], texts[2]]) + "\n")
    done = predict(tmp_path / "clf", f"tsv:{tmp_path / 'new.tsv'}", tmp_path / "table.csv")
    assert done["rows"] == 2 and done["accuracy"] is None
    assert [r["label"] for r in _rows(tmp_path / "table.csv")] == ["", ""]
    (tmp_path / "some.csv").write_text(f'text,label\n"{texts[0]}",1\n{texts[2]},\n')
    done = predict(tmp_path / "clf", f"csv:{tmp_path / 'some.csv'}", tmp_path / "some_p.csv")
    assert done["rows"] == 2 and done["labelled"] == 1
    rows = _rows(tmp_path / "some_p.csv")
    assert [r["label"] for r in rows] == ["1", ""]
    assert done["accuracy"] == float(rows[0]["predicted"] == "1")
    with pytest.raises(SelfSupError, match="has no held-out file; write tsv:TRAIN,TEST"):
        predict(tmp_path / "clf", f"tsv:{tmp_path / 'new.tsv'}", tmp_path / "x.csv", split="test")
    assert not (tmp_path / "x.csv").exists()


def test_text_finetune_and_predict_from_the_command_line(text_run, sst2_slice, tmp_path, capsys):
    code = main(["finetune", str(text_run), "--data", sst2_slice, "--out", str(tmp_path / "clf"),
                 "--epochs", "1", "--batch-size", "50", "--no-progress"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "fine-tuned for 6 steps on 300 labelled texts" in out  # 1 epoch of 300 in 50s
    assert "held out" in out and "next: selfsup predict" in out and "text:" in out
    (tmp_path / "new.txt").write_text("an utterly charming film\ndull and lifeless\n")
    code = main(["predict", str(tmp_path / "clf"), "--data", f"text:{tmp_path / 'new.txt'}",
                 "--out", str(tmp_path / "p.csv")])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0 and "(2 texts)" in out, err
    names, _ = load_classifier(tmp_path / "clf").predict(["an utterly charming film",
                                                         "dull and lifeless"])  # fmt: skip
    assert names == [r["predicted"] for r in _rows(tmp_path / "p.csv")]


def test_a_word2vec_classifier_is_its_logistic_regression(shared_data, sst2_slice, tmp_path):
    from selfsup.text.build import labeled_splits
    from selfsup.text.finetune import fit_logistic_regression, text_features

    sst2 = shared_data / "sst2"
    recipe = Recipe.from_dict(
        {
            "task": "word2vec",
            "data": f"tsv:{sst2 / 'train.tsv'},{sst2 / 'dev.tsv'}",
            "text": {"vocab_size": 600, "seq_len": 32, "limit": 600},
            "train": {"steps": 12, "batch_size": 16, "lr": 3e-3, "num_workers": 0},
        }
    )
    pretrain_run(recipe, tmp_path / "w2v", progress=False)
    with pytest.raises(SelfSupError, match="word2vec run: .* --steps, --lr do not apply"):
        finetune_run(tmp_path / "w2v", tmp_path / "clf", data=sst2_slice, steps=5, lr=0.1)
    assert not (tmp_path / "clf").exists()
    info = finetune_run(tmp_path / "w2v", tmp_path / "clf", data=sst2_slice, progress=False)
    assert info["steps"] is None and "logistic regression" in info["training"]
    done = predict(tmp_path / "clf", sst2_slice, tmp_path / "p.csv", split="test")
    assert done["accuracy"] == info["test_accuracy"]
    # The saved linear layer gives scikit-learn's probabilities (standardising folded in).
    clf = load_classifier(tmp_path / "clf")
    train, test = labeled_splits(sst2_slice, recipe, clf.tokenizer, clf.backbone)
    model = fit_logistic_regression(text_features(clf.backbone, train), train.labels)
    expected = model.predict_proba(text_features(clf.backbone, test).numpy())
    _, probabilities = clf.predict(test.raw)
    assert np.abs(probabilities.numpy() - expected).max() < 1e-4


def test_a_text_linear_probe_classifier_reads_mean_pooled_frozen_features(
    text_run, sst2_slice, tmp_path
):
    from selfsup.runs import run_backbone

    info = finetune_run(text_run, tmp_path / "clf", data=sst2_slice, protocol="linear",
                        progress=False)  # fmt: skip
    assert info["protocol"] == "linear" and info["steps"] is None
    clf = load_classifier(tmp_path / "clf")
    assert clf.settings["pool"] == "mean"
    pretrained = run_backbone(text_run).state_dict()
    assert all(torch.equal(w, pretrained[k]) for k, w in clf.backbone.state_dict().items())
    done = predict(tmp_path / "clf", sst2_slice, tmp_path / "p.csv", split="test")
    assert done["accuracy"] == info["test_accuracy"]


def test_bad_text_input_is_one_line_and_writes_nothing(text_run, sst2_slice, tmp_path, capsys):
    train_only = sst2_slice.split(",")[0]
    cases = [
        (dict(data=f"folder:{tmp_path}"), "is a text run \\(mlm\\) but folder:.* is not text"),
        (dict(data=train_only), "has no held-out file; write tsv:TRAIN,TEST"),
        (dict(data=sst2_slice, freeze_stages=9), "freeze_stages=9 but the backbone has only"),
    ]
    for kwargs, message in cases:
        with pytest.raises(SelfSupError, match=message):
            finetune_run(text_run, tmp_path / "x", progress=False, **kwargs)
    test_file = Path(sst2_slice.split(",")[1])
    (tmp_path / "odd.tsv").write_text(test_file.read_text() + "a new kind of label\tneutral\n")
    odd = f"{train_only},{tmp_path / 'odd.tsv'}"
    with pytest.raises(SelfSupError, match=r"\['neutral'\] .* add training rows with them"):
        finetune_run(text_run, tmp_path / "x", data=odd, steps=2, progress=False)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a sentence with no label\n")
    save_recipe(Recipe(task="mlm", data=f"text:{corpus}"), tmp_path / "unlabelled_run")
    with pytest.raises(SelfSupError, match="has no labels to fine-tune on; give labelled texts"):
        finetune_run(tmp_path / "unlabelled_run", tmp_path / "x")
    assert not (tmp_path / "x").exists()

    finetune_run(text_run, tmp_path / "clf", data=sst2_slice, steps=2, progress=False)
    code = main(["predict", str(tmp_path / "clf"), "--data", f"folder:{tmp_path}",
                 "--out", str(tmp_path / "p.csv")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "is a text classifier but folder:" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "p.csv").exists()
    with pytest.raises(SelfSupError, match="takes a list of strings"):
        load_classifier(tmp_path / "clf").predict("one string")
    (tmp_path / "clf" / "tokenizer.json").unlink()
    with pytest.raises(SelfSupError, match="text classifier without its tokenizer.json"):
        load_classifier(tmp_path / "clf")
