"""Downstream for video: multi-label metrics, probes, label budgets, and `selfsup evaluate`."""

from __future__ import annotations

import json

import pytest
import torch

from selfsup.evaluate.video import (
    knn_scores,
    label_subset,
    linear_scores,
    multilabel_metrics,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_both_right_accuracy_and_map_on_a_hand_made_example():
    targets = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1]])
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.0], [0.85, 0.8, 0.7, 0.0], [0.7, 0.1, 0.0, 0.8]])
    metrics = multilabel_metrics(scores, targets)
    assert metrics["accuracy"] == pytest.approx(2 / 3)  # row 2 gets only one digit right
    # Only class 0 is imperfect: its positives rank 1st and 3rd, AP = (1 + 2/3) / 2.
    assert metrics["map"] == pytest.approx((1 + 2 / 3) / 2 / 4 + 3 / 4)
    perfect = multilabel_metrics(targets.float(), targets)
    assert perfect == {"accuracy": 1.0, "map": 1.0}


def test_label_subsets_are_nested_and_seeded():
    small, large = label_subset(200, 0.05, 0), label_subset(200, 0.5, 0)
    assert len(small) == 10 and len(large) == 100
    assert set(small.tolist()) <= set(large.tolist())
    assert torch.equal(small, label_subset(200, 0.05, 0))
    assert len(label_subset(10, 0.01, 0)) == 1


def test_probes_find_the_classes_of_separable_clips():
    generator = torch.Generator().manual_seed(0)
    targets = torch.zeros(300, 6, dtype=torch.long)
    for i in range(300):
        targets[i, torch.randperm(6, generator=generator)[:2]] = 1
    features = targets.float() @ torch.randn(6, 16, generator=generator)
    features += 0.05 * torch.randn(300, 16, generator=generator)
    train_x, test_x, train_y, test_y = features[:200], features[200:], targets[:200], targets[200:]
    assert multilabel_metrics(linear_scores(train_x, train_y, test_x), test_y)["accuracy"] > 0.95
    assert multilabel_metrics(knn_scores(train_x, train_y, test_x, k=5), test_y)["map"] > 0.9


def test_evaluate_a_video_run_against_the_baselines(tmp_path, shared_data):
    from selfsup.cli import main

    spec = f"moving-mnist:{shared_data / 'mnist'}?clips=40&frames=12"
    out = tmp_path / "run"
    argv = ["pretrain", "--task", "future_frame", "--data", spec, "--image-size", "32",
            "--steps", "2", "--batch-size", "16", "--set", "backbone_options.width=8",
            "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    # The supervised baseline's 100+ steps are left to the test below.
    evaluate = ["evaluate", str(out), "--labels", "25%,100%", "--baselines", "raw,random_init"]
    assert main([*evaluate, "--no-progress"]) == 0
    results = json.loads((out / "metrics.json").read_text())
    methods = {(row["method"], row["protocol"]) for row in results["rows"]}
    assert methods == {
        ("ssl", "knn"), ("ssl", "linear"), ("raw", "logreg"), ("random_init", "knn"),
        ("random_init", "linear"),
    }  # fmt: skip
    assert all(0 <= row["accuracy"] <= 1 and 0 < row["map"] <= 1 for row in results["rows"])
    assert [row["n_labels"] for row in results["rows"]][:1] == [10]
    report = (out / "report.md").read_text()
    assert "which digits" in report and "Future frames" in report
    # Each row also reaches on_row as it is measured: what `selfsup evaluate` keeps on disk.
    from selfsup.runs import evaluate_run

    seen: list[dict] = []
    again = evaluate_run(out, fractions=(1.0,), baselines=("raw",), progress=False,
                         on_row=seen.append)  # fmt: skip
    assert seen == again["rows"] and len(seen) == 3  # ssl knn, ssl linear, raw logreg


def test_frame_training_keeps_frozen_stages_as_they_were(shared_data):
    from selfsup.backbones import build_backbone
    from selfsup.data import load_images
    from selfsup.evaluate.video import clip_frames, frame_training_scores

    spec = f"moving-mnist:{shared_data / 'mnist'}?clips=40&frames=4"
    train = load_images(spec, "test", image_size=32)  # 10 clips
    torch.manual_seed(1)
    backbone = build_backbone("small_cnn", in_channels=1, image_size=32, width=8)
    stages = backbone.stages()
    before = [{k: v.clone() for k, v in stage.state_dict().items()} for stage in stages]
    frame_training_scores(backbone, train, torch.arange(10), clip_frames(train), 10,
                          steps=5, batch_size=10, freeze_stages=2)  # fmt: skip
    for stage, saved in zip(stages[:2], before[:2], strict=True):  # weights and BN statistics
        assert all(torch.equal(v, saved[k]) for k, v in stage.state_dict().items())
    assert not torch.equal(stages[3][0].weight, before[3]["0.weight"])


@pytest.mark.parametrize("start", ["scratch", "pretrained", "rescaled"])
def test_frame_training_learns_from_labelled_clips(shared_data, start):
    from selfsup.backbones import build_backbone
    from selfsup.data import load_images
    from selfsup.evaluate.video import clip_frames, finetune_scores, supervised_scores

    spec = f"moving-mnist:{shared_data / 'mnist'}?clips=160&frames=4"
    train = load_images(spec, "test", image_size=32)  # 40 clips of MNIST test digits
    config = {"name": "small_cnn", "in_channels": 1, "image_size": 32, "width": 8}
    labelled = torch.arange(30)
    frames = clip_frames(train)
    args = (train, labelled, frames, 40)
    if start == "scratch":
        scores = supervised_scores(config, *args, steps=60, batch_size=30)
    else:
        torch.manual_seed(1)
        pretrained = build_backbone(**config)
        before = [p.detach().clone() for p in pretrained.parameters()]
        scores = finetune_scores(
            pretrained, *args, steps=60, batch_size=30, rescale=start == "rescaled"
        )
        # Fine-tuning trains (and rescales) a copy: the pretrained backbone is left as it was.
        assert all(torch.equal(a, b) for a, b in zip(before, pretrained.parameters(), strict=True))
    seen = multilabel_metrics(scores[:30], train.clip_labels[:30])["map"]
    assert scores.shape == (40, 10) and seen > 0.5  # chance mAP is about 0.2
