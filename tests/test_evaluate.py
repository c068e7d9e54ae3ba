"""Evaluation protocols: label budgets, kNN, linear probe, fine-tuning and the full protocol."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import selfsup.backbones
from selfsup.data.base import ImageDataset, TensorImageDataset
from selfsup.errors import SelfSupError
from selfsup.evaluate import (
    evaluate_backbone,
    extract_features,
    finetune,
    finetune_accuracy,
    knn_accuracy,
    linear_probe_accuracy,
    stratified_subset,
    supervised_from_scratch_accuracy,
)
from selfsup.evaluate import knn as knn_module


class TinyBackbone(nn.Module):
    """Stand-in with the backbone contract: feature_dim, config, stages(), [0, 1] input."""

    def __init__(self, in_channels: int = 1, image_size: int = 8, feature_dim: int = 32):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * image_size**2, 64), nn.BatchNorm1d(64), nn.ReLU()
        )
        self.top = nn.Sequential(nn.Linear(64, feature_dim), nn.ReLU())
        self.feature_dim = feature_dim
        self.config = {
            "name": "tiny",
            "in_channels": in_channels,
            "image_size": image_size,
            "feature_dim": feature_dim,
        }

    def stages(self) -> list[nn.Module]:
        return [self.stem, self.top]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(self.stem(x))


def build_tiny(name: str, in_channels: int, image_size: int, feature_dim: int) -> nn.Module:
    assert name == "tiny"
    return TinyBackbone(in_channels, image_size, feature_dim)


@pytest.fixture
def tiny_registry(monkeypatch):
    monkeypatch.setattr(selfsup.backbones, "build_backbone", build_tiny, raising=False)


@pytest.fixture(scope="module")
def digits() -> tuple[TensorImageDataset, TensorImageDataset]:
    """200 train / 300 test real 8x8 digits as uint8 (1, 8, 8) images."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.from_numpy(data.images * 255 / 16).round().to(torch.uint8).unsqueeze(1)
    labels = torch.from_numpy(data.target).long()
    return (
        TensorImageDataset(images[:200], labels[:200], name="digits-train"),
        TensorImageDataset(images[200:500], labels[200:500], name="digits-test"),
    )


def pretrained_like(seed: int = 0) -> TinyBackbone:
    torch.manual_seed(seed)
    return TinyBackbone()


def clusters(n_per_class: int, classes: int, dim: int, spread: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g) * 5
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = centers[y] + spread * torch.randn(len(y), dim, generator=g)
    return x, y


# --- label budgets ------------------------------------------------------------------------


def test_stratified_subset_counts_determinism_and_nesting():
    labels = torch.tensor([0] * 100 + [1] * 50 + [2] * 3 + [-1] * 7)[torch.randperm(160)]
    idx = stratified_subset(labels, 0.1, seed=3)
    assert torch.equal(idx, torch.sort(idx).values)
    assert torch.bincount(labels[idx], minlength=3).tolist() == [10, 5, 1]  # >= 1 per class
    assert (labels[idx] >= 0).all()
    assert torch.equal(idx, stratified_subset(labels, 0.1, seed=3))
    assert not torch.equal(idx, stratified_subset(labels, 0.1, seed=4))
    bigger = stratified_subset(labels, 0.5, seed=3)
    assert set(idx.tolist()) <= set(bigger.tolist())
    assert len(stratified_subset(labels, 1.0, seed=0)) == 153
    for bad in (0.0, 1.5):
        with pytest.raises(SelfSupError, match="fraction"):
            stratified_subset(labels, bad, seed=0)


# --- kNN ----------------------------------------------------------------------------------


def test_knn_separable_is_perfect_and_shuffled_is_chance(monkeypatch):
    x, y = clusters(60, 4, 16, spread=0.5, seed=0)
    xt, yt = clusters(50, 4, 16, spread=0.5, seed=0)
    xt = xt + 0.1 * torch.randn_like(xt)
    assert knn_accuracy(x, y, xt, yt, k=5) == 1.0
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]
    whole = knn_module.knn_predict(x, shuffled, xt, k=5)
    assert (whole == yt).float().mean() < 0.45  # chance is 0.25
    # Chunking over the test set (3 queries at a time) must not change the answer.
    monkeypatch.setattr(knn_module, "_CHUNK_ELEMENTS", 3 * len(x))
    assert torch.equal(knn_module.knn_predict(x, shuffled, xt, k=5), whole)
    with pytest.raises(SelfSupError, match="k >= 1"):  # k=0 used to return a score
        knn_module.knn_predict(x, y, xt, k=0)


def test_knn_votes_are_temperature_weighted():
    # One very close neighbour of class 0 against two far ones of class 1.
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    labels = torch.tensor([0, 1, 1])
    query, truth = torch.tensor([[1.0, 0.05]]), torch.tensor([0])
    assert knn_accuracy(train, labels, query, truth, k=3, temperature=0.07) == 1.0
    assert knn_accuracy(train, labels, query, truth, k=3, temperature=100.0) == 0.0  # ~majority
    assert knn_accuracy(train, labels, query, truth, k=50) == 1.0  # k larger than the train set


# --- linear probe -------------------------------------------------------------------------


def test_linear_probe_separable_and_shuffled():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 20, generator=g)
    x[:, 5] = 3.0  # a constant feature must not produce NaNs when standardised
    w = torch.randn(20, 3, generator=g)
    y = (x @ w).argmax(1)  # linearly separable, but not clustered
    xt = torch.randn(300, 20, generator=g)
    xt[:, 5] = 3.0
    yt = (xt @ w).argmax(1)
    assert linear_probe_accuracy(x, y, xt, yt) > 0.93
    shuffled = y[torch.randperm(600, generator=g)]
    assert linear_probe_accuracy(x, shuffled, xt, yt) < 0.5  # chance is ~1/3
    # Two labels per class: no validation split; the fixed default still finds the clusters.
    cx, cy = clusters(2, 3, 20, spread=1.0, seed=5)
    cxt, cyt = clusters(100, 3, 20, spread=1.0, seed=5)
    assert linear_probe_accuracy(cx, cy, cxt + torch.randn_like(cxt), cyt) > 0.9


# --- features and fine-tuning -------------------------------------------------------------


class LazyDigits(ImageDataset):
    """A dataset without a batched path, as an image folder would be."""

    def __init__(self, base: TensorImageDataset) -> None:
        self.base = base

    @property
    def labels(self) -> torch.Tensor:
        return self.base.labels

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.base.image_shape

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.base[index]


def test_extract_features_is_eval_mode_and_matches_lazy_path(digits):
    train, _ = digits
    backbone = pretrained_like()
    backbone.train()
    feats = extract_features(backbone, train, batch_size=64)
    assert feats.shape == (200, 32) and feats.dtype == torch.float32
    assert backbone.training  # mode restored
    # Eval-mode BN: a sample's features do not depend on the rest of its batch.
    assert torch.allclose(feats[:10], extract_features(backbone, train.subset(torch.arange(10))))
    lazy = extract_features(backbone, LazyDigits(train.subset(torch.arange(40))), batch_size=16)
    assert torch.allclose(lazy, feats[:40], atol=1e-6)


def test_finetune_learns_and_never_touches_the_callers_backbone(digits):
    train, test = digits
    backbone = pretrained_like()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    accuracy = finetune_accuracy(backbone, train, test, steps=40, batch_size=64, lr=3e-3)
    assert accuracy > 0.5  # chance is 0.1
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, before[key]), key
    again = finetune_accuracy(backbone, train, test, steps=40, batch_size=64, lr=3e-3)
    assert again == accuracy  # seeded


def test_freeze_stages_keeps_frozen_weights_and_bn_statistics(digits):
    train, test = digits
    backbone = pretrained_like()
    result = finetune(backbone, train, test, freeze_stages=1, steps=10, batch_size=64)
    for key, value in backbone.stem.state_dict().items():
        assert torch.equal(result.backbone.stem.state_dict()[key], value), key
    assert not torch.equal(result.backbone.top[0].weight, backbone.top[0].weight)
    with pytest.raises(SelfSupError, match="stages"):
        finetune(backbone, train, test, freeze_stages=3, steps=1)


@pytest.mark.parametrize(
    "name, options",
    [("small_cnn", {"width": 8}), ("resnet18", {"width": 0.25}), ("resnet50", {"width": 0.125})],
)
def test_rescale_puts_conv_norms_back_and_keeps_the_function(name, options):
    from selfsup.backbones import build_backbone
    from selfsup.evaluate.finetune import conv_bn_pairs, rescale_to_fresh

    torch.manual_seed(1)
    grown = build_backbone(name, in_channels=1, image_size=16, **options)
    convs = [m for m in grown.modules() if isinstance(m, nn.Conv2d)]
    assert len(conv_bn_pairs(grown, (1, 16, 16))) == len(convs)  # every conv feeds a BN here
    factors = torch.rand(len(convs)) * 3 + 0.5
    with torch.no_grad():
        for conv, factor in zip(convs, factors, strict=True):
            conv.weight.mul_(factor)  # what pretraining does to the scale
    grown.train()
    for _ in range(5):  # running statistics of the grown network
        grown(torch.rand(8, 1, 16, 16))
    grown.eval()
    images = torch.rand(4, 1, 16, 16)
    before = grown(images)
    torch.manual_seed(2)
    fresh = build_backbone(name, in_channels=1, image_size=16, **options)
    growth = rescale_to_fresh(grown, (1, 16, 16), seed=2)
    # Exact but for batch norm's eps, which does not scale with the variance.
    assert torch.allclose(grown(images), before, rtol=1e-3, atol=1e-3)
    fresh_convs = [m for m in fresh.modules() if isinstance(m, nn.Conv2d)]
    for conv, twin in zip(convs, fresh_convs, strict=True):
        assert torch.isclose(conv.weight.norm(), twin.weight.norm(), rtol=1e-5)
    torch.manual_seed(1)
    unscaled = build_backbone(name, in_channels=1, image_size=16, **options)
    expected = [
        float(f * a.weight.detach().norm() / b.weight.detach().norm())
        for f, a, b in zip(factors, [m for m in unscaled.modules() if isinstance(m, nn.Conv2d)],
                           fresh_convs, strict=True)
    ]  # fmt: skip
    assert growth == pytest.approx(expected, rel=1e-4)


def test_rescale_refuses_backbones_without_conv_and_batch_norm(digits):
    from selfsup.backbones import build_backbone
    from selfsup.evaluate.finetune import rescale_to_fresh

    vit = build_backbone("vit_tiny", in_channels=1, image_size=16, dim=48, depth=1, heads=3)
    with pytest.raises(SelfSupError, match="no convolution followed by batch norm"):
        rescale_to_fresh(vit, (1, 16, 16))
    train, test = digits
    torch.manual_seed(0)
    backbone = build_backbone("small_cnn", in_channels=1, image_size=8, width=8)
    with torch.no_grad():
        backbone.layers[1][0].weight.mul_(3)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    result = finetune(backbone, train, test, steps=5, batch_size=64, rescale=True)
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, before[key]), key  # the caller's backbone is not rescaled
    grown, tuned = backbone.layers[1][0].weight, result.backbone.layers[1][0].weight
    assert tuned.norm() < 0.5 * grown.norm()  # the copy was: 3x grown, back to about 1x
    assert 0.0 <= result.accuracy <= 1.0


def test_default_budget_gives_few_labels_more_epochs():
    from selfsup.evaluate.finetune import default_epochs

    assert [default_epochs(n) for n in (10, 600, 6000, 60000)] == [100, 34, 11, 4]


def test_supervised_from_scratch_beats_chance(digits, tiny_registry):
    train, test = digits
    config = pretrained_like().config
    accuracy = supervised_from_scratch_accuracy(config, train, test, steps=40, lr=3e-3)
    assert accuracy > 0.4


# --- the whole protocol -------------------------------------------------------------------


def test_evaluate_backbone_returns_every_row_for_every_fraction(digits, tiny_registry):
    train, test = digits
    results = evaluate_backbone(
        pretrained_like(),
        train,
        test,
        protocols=("knn", "linear", "finetune"),
        fractions=(0.1, 1.0),
        k=5,
        progress=False,
        finetune_options={"steps": 3},
    )
    expected = {
        ("ssl", "knn"),
        ("ssl", "linear"),
        ("ssl", "finetune"),
        ("raw", "knn"),
        ("raw", "logreg"),
        ("random_init", "knn"),
        ("random_init", "linear"),
        ("supervised", "train"),
    }
    assert results["fractions"] == [0.1, 1.0]
    assert results["test_size"] == 300 and results["feature_dim"] == 32
    for fraction, n in ((0.1, 20), (1.0, 200)):
        rows = [r for r in results["rows"] if r["fraction"] == fraction]
        assert {(r["method"], r["protocol"]) for r in rows} == expected
        assert all(r["n_labels"] == n and 0.0 <= r["accuracy"] <= 1.0 for r in rows)
    raw_knn = next(r for r in results["rows"] if (r["method"], r["fraction"]) == ("raw", 1.0))
    assert raw_knn["accuracy"] > 0.8  # raw pixels on digits are good: the baseline is real
    json.dumps(results)
    with pytest.raises(SelfSupError, match="unknown protocol"):
        evaluate_backbone(pretrained_like(), train, test, protocols=("svm",), progress=False)
    unlabelled = TensorImageDataset(train.images)
    with pytest.raises(SelfSupError, match="labelled"):
        evaluate_backbone(pretrained_like(), unlabelled, test, progress=False)
    one_class = TensorImageDataset(train.images, torch.zeros(len(train), dtype=torch.int64))
    with pytest.raises(SelfSupError, match="single class"):  # every method would score 1.0
        evaluate_backbone(pretrained_like(), one_class, test, progress=False)


# --- runs: evaluate / embed / resume from the command's point of view ------------------------


def _image_folder(root, classes=("cats", "dogs"), per_class=10, flat=False):
    """Tiny PNGs of two classes (DIR/<class>/*.png), or one flat folder of them."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        folder = root if flat else root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 80, (12, 10, 3), dtype=np.uint8) + 120 * c
            Image.fromarray(pixels).save(folder / f"{name}_{i}.png")
    return root


def _tiny_run(out, data="digits", steps=3, **train):
    from selfsup.recipe import Recipe
    from selfsup.runs import pretrain_run

    recipe = Recipe(
        task="rotation",
        backbone_options={"width": 8},
        data=data,
        image_size=None if data == "digits" else 8,
        train={"steps": steps, "batch_size": 8, "checkpoint_every": 3, "log_every": 1,
               "num_workers": 0, **train},
    )  # fmt: skip
    return pretrain_run(recipe, out, progress=False)


@pytest.fixture
def no_workers(monkeypatch):
    """Folder images read on the main process: fast, and the same result as with workers."""
    from selfsup.evaluate import features

    monkeypatch.setattr(features, "default_num_workers", lambda: 0)


def test_a_run_finds_its_relative_data_from_another_directory(
    tmp_path, monkeypatch, capsys, no_workers
):
    from selfsup.recipe import load_run
    from selfsup.runs import ORIGIN, evaluate_run, pretrain_run

    start = tmp_path / "start"
    _image_folder(start / "imgs")
    monkeypatch.chdir(start)
    _tiny_run(start / "runs" / "a", data="folder:imgs")
    assert load_run(start / "runs" / "a").data == "folder:imgs"  # kept as the user typed it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = tmp_path / "start" / "runs" / "a"
    results = evaluate_run(run, protocols=("knn",), fractions=(1.0,), baselines=(),
                           progress=False)  # fmt: skip
    assert results["rows"] and str(start / "imgs") in capsys.readouterr().err
    # The user's own --data is read from here, with no note about the run's data.
    evaluate_run(run, data=f"folder:{start / 'imgs'}", protocols=("knn",), fractions=(1.0,),
                 baselines=(), progress=False)  # fmt: skip
    assert "relative to" not in capsys.readouterr().err
    pretrain_run(load_run(run), run, resume=True, progress=False)  # already complete: no-op
    assert load_run(run).data == "folder:imgs"  # resuming does not rewrite the spec
    # A run written before origin.json still loads; its data is then looked for from here.
    (run / ORIGIN).unlink()
    with pytest.raises(SelfSupError, match="imgs"):
        evaluate_run(run, protocols=("knn",), fractions=(1.0,), baselines=(), progress=False)


def test_a_corrupt_image_in_evaluation_is_one_line(tmp_path, monkeypatch):
    from selfsup.data.folder import load_folder
    from selfsup.errors import DataError
    from selfsup.evaluate import features

    root = _image_folder(tmp_path / "imgs")
    (root / "cats" / "cats_3.png").write_bytes(b"\x89PNG not really")
    monkeypatch.setattr(features, "default_num_workers", lambda: 1)  # the error crosses a worker
    dataset = load_folder(root, "train", 8)
    with pytest.raises(DataError) as error:
        extract_features(pretrained_like(), dataset)
    message = str(error.value)
    assert "cats_3.png" in message and "Traceback" not in message and "\n" not in message


def test_evaluating_an_interrupted_run_says_which_step(tmp_path, capsys):
    import yaml

    from selfsup.runs import BACKBONE_DIR, evaluate_run

    run = tmp_path / "run"
    _tiny_run(run, steps=3)
    # What Ctrl-C at step 3 of 6 leaves: the checkpoint, no exported backbone.
    recipe = yaml.safe_load((run / "run.yaml").read_text())
    recipe["train"]["steps"] = 6
    (run / "run.yaml").write_text(yaml.safe_dump(recipe))
    import shutil

    shutil.rmtree(run / BACKBONE_DIR)
    evaluate_run(run, protocols=("knn",), fractions=(1.0,), baselines=(), progress=False)
    err = capsys.readouterr().err
    assert "pretraining stopped at step 3 of 6" in err
    assert "only 3 steps; its batch norm's running statistics" in err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["run"]["steps"] == 3 and metrics["run"]["planned_steps"] == 6
    assert "stopped at step 3 of 6" in (run / "report.md").read_text()


def test_fine_tuning_shows_its_steps_only_when_asked(digits, capsys, monkeypatch):
    from selfsup.evaluate import features

    train, test = digits
    finetune(pretrained_like(), train, test, steps=10, batch_size=32, progress=None)
    assert capsys.readouterr().err == ""
    finetune(pretrained_like(), train, test, steps=10, batch_size=32, progress="ft 10%")
    assert capsys.readouterr().err == ""  # not a terminal, and done within 10 s: no lines
    monkeypatch.setattr(features, "PROGRESS_INTERVAL", 0.0)
    finetune(pretrained_like(), train, test, steps=10, batch_size=32, progress="ft 10%")
    lines = capsys.readouterr().err.splitlines()  # a line every 10% once they are due
    assert lines[0] == "ft 10%: step 1/10" and lines[-1] == "ft 10%: step 10/10"


def test_unlabelled_runs_and_runs_without_checkpoint_say_what_to_do(
    tmp_path, monkeypatch, no_workers
):
    from selfsup.recipe import Recipe, save_recipe
    from selfsup.runs import embed_run, evaluate_run

    assert _tiny_run(tmp_path / "digits")["next"] == f"selfsup evaluate {tmp_path / 'digits'}"
    flat = _image_folder(tmp_path / "flat", flat=True)
    summary = _tiny_run(tmp_path / "f", data=f"folder:{flat}")
    assert summary["next"].endswith("--data folder:LABELLED_DIR")
    with pytest.raises(SelfSupError, match="has no test split.*--split train"):
        embed_run(tmp_path / "f", f"folder:{flat}", tmp_path / "e.npy", split="test")
    save_recipe(Recipe(), tmp_path / "empty")  # a run killed before its first checkpoint
    with pytest.raises(SelfSupError, match="no checkpoint yet.*--recipe"):
        evaluate_run(tmp_path / "empty", progress=False)


def test_embed_rows_name_the_clip_of_each_video_frame(tmp_path):
    from selfsup.data import load_images
    from selfsup.recipe import match_channels
    from selfsup.runs import _row_names

    for name, frames in (("a", 3), ("b", 6)):
        np.save(tmp_path / f"{name}.npy", np.zeros((frames, 8, 8), np.uint8))
    clips = load_images(f"video:{tmp_path}?length=3&stride=1", "train")
    # b.npy's 6 frames hold two clips of 3; the names survive conversion to RGB.
    for data in (clips, match_channels(clips, 3)):
        files = [row[3] for row in _row_names(data, "train")]
        assert files == [str(tmp_path / "a.npy")] * 3 + [str(tmp_path / "b.npy")] * 6


def test_the_python_api_takes_the_clis_spellings_and_names_bad_arguments(tmp_path, no_workers):
    from selfsup.runs import evaluate_run, label_fractions, pretrain_run

    assert label_fractions("10%") == (0.1,) and label_fractions(0.5) == (0.5,)
    assert label_fractions(["1%", 0.1, "1"]) == (0.01, 0.1, 1.0)
    for bad in (None, ["ten"], [True]):
        with pytest.raises(SelfSupError, match="fractions must be numbers"):
            label_fractions(bad)
    with pytest.raises(SelfSupError, match="pretrain_run takes a Recipe, got dict.*from_dict"):
        pretrain_run({"task": "simclr"}, tmp_path / "r")
    for option in ({"k": "5"}, {"seed": "1"}):
        with pytest.raises(SelfSupError, match=f"{next(iter(option))} must be a whole number"):
            evaluate_run(tmp_path / "r", **option)


def test_kept_rows_survive_a_last_line_cut_short(tmp_path):
    """A crash or a full disk mid-row left a cut-short last line, and the whole file of
    finished rows was thrown away for it; now the rows before it are taken up."""
    from selfsup.recipe import Recipe, save_recipe
    from selfsup.runs import EVALUATION_ROWS, kept_rows

    save_recipe(Recipe(), tmp_path)
    settings = {"labels": [0.1]}
    rows = [{"method": m, "protocol": "knn", "fraction": 0.1, "accuracy": 0.5} for m in "ab"]
    with pytest.raises(KeyboardInterrupt), kept_rows(tmp_path, settings) as (keep, finished):
        assert finished == {}
        for row in rows:
            keep(row)
        with (tmp_path / EVALUATION_ROWS).open("a") as f:
            f.write('{"method": "c", "proto')  # the third row, cut short
        raise KeyboardInterrupt
    with kept_rows(tmp_path, settings) as (keep, finished):
        assert list(finished) == [("a", "knn", 0.1), ("b", "knn", 0.1)]
        keep({"method": "c", "protocol": "knn", "fraction": 0.1, "accuracy": 0.5})
        lines = (tmp_path / EVALUATION_ROWS).read_text().splitlines()
        assert [json.loads(line).get("method") for line in lines] == [None, "a", "b", "c"]


def test_a_damaged_checkpoint_of_a_finished_run_costs_only_the_pictures(tmp_path, capsys):
    """The backbone comes from its export, but the report's task pictures read last.pt: a
    damaged one failed the evaluation after every row was measured."""
    from selfsup.engine import CHECKPOINT
    from selfsup.runs import evaluate_run

    run = tmp_path / "run"
    _tiny_run(run)
    (run / CHECKPOINT).write_bytes((run / CHECKPOINT).read_bytes()[:1000])
    results = evaluate_run(run, protocols=("knn",), fractions=(1.0,), baselines=(),
                           progress=False)  # fmt: skip
    assert results["rows"] and (run / "report.md").is_file()
    assert "no task pictures" in capsys.readouterr().err


def test_other_data_is_read_at_the_size_the_backbone_was_pretrained_at(tmp_path):
    """A recipe without image_size (digits' own 8 px) once left a folder at its default 32 px
    for evaluate and embed, a scale the backbone never saw (and a ViT cannot take)."""
    from PIL import Image

    from selfsup.backbones import build_backbone
    from selfsup.recipe import Recipe
    from selfsup.runs import backbone_data

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.new("L", (40, 40), 60 * i).save(tmp_path / name / f"{i}.png")
    backbone = build_backbone("small_cnn", in_channels=1, image_size=8, width=8)
    dataset = backbone_data(Recipe(data="digits"), "train", f"folder:{tmp_path}", backbone)
    assert dataset.image_shape == (1, 8, 8)
