"""The classifier a user keeps: `selfsup finetune` saves it, `selfsup predict` applies it."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

import selfsup
from selfsup.classifier import HEAD, finetune_run, load_classifier, predict
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
    text_run = tmp_path / "text_run"
    save_recipe(Recipe(task="mlm", data="text:corpus.txt"), text_run)
    with pytest.raises(SelfSupError, match="keep image classifiers; text:corpus.txt is text"):
        finetune_run(text_run, tmp_path / "x")
    with pytest.raises(SelfSupError, match="is clips"):
        finetune_run(run, tmp_path / "x", data="moving-mnist:somewhere")
    assert not (tmp_path / "x").exists()

    (tmp_path / "clf" / HEAD).write_bytes(before[:40])
    code = main(["predict", str(tmp_path / "clf"), "--data", "digits", "--out",
                 str(tmp_path / "p.csv")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "head.safetensors is missing or corrupt" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "p.csv").exists()
