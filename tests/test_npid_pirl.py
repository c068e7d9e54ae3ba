"""NPID and PIRL: a step on gray and colour data, learning, and an exactly resumable bank."""

from __future__ import annotations

import signal

import pytest
import torch

from selfsup.backbones import build_backbone
from selfsup.data import load_images
from selfsup.engine import CHECKPOINT, load_checkpoint
from selfsup.errors import SelfSupError
from selfsup.recipe import Recipe, build_task, load_run
from selfsup.runs import pretrain_run
from selfsup.tasks.npid import NPID
from selfsup.tasks.pirl import PIRL

TASKS = {"npid": NPID, "pirl": PIRL}


pytestmark = pytest.mark.usefixtures("one_thread")


def make_task(name: str, shape: tuple[int, int, int], dataset_size: int, **options):
    torch.manual_seed(0)
    backbone = build_backbone("small_cnn", shape[0], shape[1], width=8)
    return TASKS[name](backbone, shape, dataset_size=dataset_size, **options)


def digits(n: int) -> torch.Tensor:
    return load_images("digits").images[:n].float() / 255


@pytest.mark.parametrize("name", TASKS)
def test_a_step_on_gray_and_colour_images_gives_a_finite_loss_and_gradients(shared_data, name):
    cifar = load_images("cifar10:" + str(shared_data / "cifar10"), "test").images[:16]
    # Each objective once, on each channel count.
    for images, objective in ((digits(16), "infonce"), (cifar.float() / 255, "nce")):
        task = make_task(name, tuple(images.shape[1:]), 40, objective=objective)
        indices = torch.randperm(40)[:16]
        before = task.bank.rows.clone()
        logs = task({"images": images, "labels": torch.full((16,), -1), "indices": indices})
        assert torch.isfinite(logs["loss"])
        logs["loss"].backward()
        grads = [p.grad for p in task.backbone.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
        moved = (task.bank.rows != before).any(dim=1)
        assert moved[indices].all() and moved.sum() == 16  # only the batch's rows
        pictures = task.show(images)
        assert all(p.shape[1:] == images.shape[1:] for p in pictures.values())


@pytest.mark.parametrize("name", TASKS)
def test_a_few_steps_reduce_the_loss_on_a_tiny_dataset(name):
    images = digits(32)
    task = make_task(name, (1, 8, 8), 32)
    optimizer = torch.optim.Adam(task.parameters(), lr=3e-3)
    losses = []
    for step in range(16):
        torch.manual_seed(step)
        indices = torch.arange(16) + 16 * (step % 2)
        logs = task({"images": images[indices], "labels": indices * 0, "indices": indices})
        optimizer.zero_grad()
        logs["loss"].backward()
        optimizer.step()
        losses.append(float(logs["loss"].detach()))
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.2, losses


def tiny_recipe(task: str) -> Recipe:
    return Recipe(
        task=task,
        task_options={"num_negatives": 256},
        backbone="small_cnn",
        backbone_options={"width": 8},
        data="digits",
        train={
            "steps": 6,
            "batch_size": 32,
            "log_every": 1,
            "checkpoint_every": 3,
            "num_workers": 0,
        },
    )


@pytest.mark.parametrize("name", TASKS)
def test_interrupted_then_resumed_run_ends_with_the_same_bank(tmp_path, monkeypatch, name):
    pretrain_run(tiny_recipe(name), tmp_path / "straight", progress=False)
    cls = TASKS[name]
    original = cls.after_optimizer_step

    def interrupt_at_4(self, step, total):
        original(self, step, total)
        if step == 3:  # Ctrl-C during the 4th step: the run saves after it and stops
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(cls, "after_optimizer_step", interrupt_at_4)
    with pytest.raises(SelfSupError, match="--resume"):
        pretrain_run(tiny_recipe(name), tmp_path / "resumed", progress=False)
    assert int(load_checkpoint(tmp_path / "resumed" / CHECKPOINT)["step"]) == 4
    monkeypatch.setattr(cls, "after_optimizer_step", original)
    pretrain_run(load_run(tmp_path / "resumed"), tmp_path / "resumed", resume=True, progress=False)

    straight = load_checkpoint(tmp_path / "straight" / CHECKPOINT)["task"]
    resumed = load_checkpoint(tmp_path / "resumed" / CHECKPOINT)["task"]
    assert straight["bank.rows"].shape == (len(load_images("digits")), 128)
    torch.manual_seed(0)  # the run's seed: the bank it started from
    fresh = build_task(tiny_recipe(name), (1, 8, 8), len(load_images("digits")))
    assert (straight["bank.rows"] != fresh.bank.rows).any(dim=1).sum() >= 6 * 32 - 32
    assert straight.keys() == resumed.keys()
    for key in straight:
        same = torch.allclose(
            straight[key].float(), resumed[key].float(), atol=1e-6, equal_nan=True
        )
        assert same, key


def test_the_recipe_gives_one_bank_row_per_image_and_a_missing_size_is_a_clear_error():
    task = build_task(Recipe(task="pirl", backbone_options={"width": 8}), (1, 8, 8), 123)
    assert task.bank.rows.shape == (123, 128)
    backbone = build_backbone("small_cnn", 1, 8, width=8)
    with pytest.raises(SelfSupError, match="dataset_size"):
        NPID(backbone, (1, 8, 8))
    with pytest.raises(SelfSupError, match="objective"):
        PIRL(backbone, (1, 8, 8), dataset_size=10, objective="hinge")
