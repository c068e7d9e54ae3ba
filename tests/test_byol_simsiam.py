"""BYOL and SimSiam: stop-gradients, BYOL's momentum schedule and resume; all three methods of
this family (with MoCo) train: finite losses on 1 and 3 channels, falling loss on tiny data."""

from __future__ import annotations

import math
import signal

import pytest
import torch
import torch.nn.functional as F

from selfsup.augment import light_augment
from selfsup.backbones import build_backbone
from selfsup.data import load_images
from selfsup.engine import CHECKPOINT, load_checkpoint
from selfsup.errors import SelfSupError
from selfsup.recipe import Recipe, load_run
from selfsup.runs import pretrain_run
from selfsup.tasks import task_class
from selfsup.tasks.byol import BYOL
from selfsup.tasks.momentum import cosine_momentum
from selfsup.tasks.simsiam import SimSiam

pytestmark = pytest.mark.usefixtures("one_thread")


def digits(n: int = 16) -> torch.Tensor:
    return load_images("digits", "train").images[:n].float() / 255


def make(name: str, images: torch.Tensor, **options):
    torch.manual_seed(0)
    channels, size = images.shape[1], images.shape[2]
    backbone = build_backbone("small_cnn", in_channels=channels, image_size=size, width=8)
    return task_class(name)(backbone, (channels, size, size), **options)


def test_byol_blurs_its_two_views_asymmetrically_where_blur_applies():
    big = BYOL(build_backbone("small_cnn", in_channels=3, image_size=64, width=8), (3, 64, 64))
    assert (big.augment.blur_p, big.augment_target.blur_p) == (1.0, 0.1)  # Grill et al.
    assert (big.augment.solarize_p, big.augment_target.solarize_p) == (0.0, 0.2)
    small = BYOL(build_backbone("small_cnn", in_channels=3, image_size=32, width=8), (3, 32, 32))
    assert small.augment.blur_p == small.augment_target.blur_p == 0.0  # CIFAR: no blur
    chosen = BYOL(build_backbone("small_cnn", in_channels=3, image_size=64, width=8), (3, 64, 64),
                  augment={"blur_p": 0.3})  # fmt: skip
    assert chosen.augment.blur_p == chosen.augment_target.blur_p == 0.3


def test_cosine_momentum_schedule_goes_from_base_to_one():
    assert cosine_momentum(0.99, 0, 100) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 50, 100) == pytest.approx(0.995)
    assert cosine_momentum(0.99, 100, 100) == pytest.approx(1.0)
    values = [cosine_momentum(0.9, k, 20) for k in range(21)]
    assert values == sorted(values)


def test_byol_target_gets_no_gradient_and_follows_the_online_network():
    images = digits()
    task = make("byol", images, projection_dim=16, hidden_dim=32)
    assert isinstance(task, BYOL)
    logs = task({"images": images})
    logs["loss"].backward()
    assert 0 <= float(logs["loss"].detach()) <= 8 and float(logs["embedding_std"]) > 0
    assert all(p.grad is None and not p.requires_grad for p in task.target.parameters())
    online = [*task.backbone.parameters(), *task.projector.parameters()]
    assert all(p.grad is not None for p in online)
    assert all(p.grad is not None for p in task.predictor.parameters())

    # The loss is the paper's (2 - 2 cos(p1, z2')) + (2 - 2 cos(p2, z1')) on the same views.
    torch.manual_seed(1)
    got = task({"images": images})["loss"]
    torch.manual_seed(1)
    v1, v2 = task.augment(images), task.augment_target(images)
    p1, p2 = (task.predictor(task.projector(task.backbone(v))) for v in (v1, v2))
    t1, t2 = task.target(v1), task.target(v2)
    expected = (2 - 2 * F.cosine_similarity(p1, t2)).mean() + (
        2 - 2 * F.cosine_similarity(p2, t1)
    ).mean()
    assert torch.allclose(got, expected, atol=1e-5)

    # After an optimizer step the target moves by the scheduled EMA, nothing else.
    before = [p.clone() for p in task.target.parameters()]
    with torch.no_grad():
        for p in online:
            p.add_(0.1)
    task.after_optimizer_step(4, 10)
    tau = cosine_momentum(0.99, 5, 10)
    for t, b, o in zip(task.target.parameters(), before, online, strict=True):
        assert torch.allclose(t, tau * b + (1 - tau) * o, atol=1e-6)


def test_simsiam_stop_gradient_cuts_the_target_branch():
    images = digits()
    task = make("simsiam", images, projection_dim=16)
    assert isinstance(task, SimSiam)
    params = [p for p in task.parameters() if p.requires_grad]

    def grads(loss: torch.Tensor) -> list[torch.Tensor]:
        return [g.clone() for g in torch.autograd.grad(loss, params, allow_unused=False)]

    torch.manual_seed(1)
    got = grads(task({"images": images})["loss"])

    def reference(stop: bool) -> list[torch.Tensor]:
        torch.manual_seed(1)
        z1 = task.projector(task.backbone(task.augment(images)))
        z2 = task.projector(task.backbone(task.augment(images)))
        p1, p2 = task.predictor(z1), task.predictor(z2)
        t1, t2 = (z1.detach(), z2.detach()) if stop else (z1, z2)
        loss = -(F.cosine_similarity(p1, t2).mean() + F.cosine_similarity(p2, t1).mean()) / 2
        return grads(loss)

    with_stop, without_stop = reference(True), reference(False)
    assert all(torch.allclose(g, e, atol=1e-6) for g, e in zip(got, with_stop, strict=True))
    # The stop-gradient matters: letting gradient into z changes the backbone's gradient.
    assert not all(torch.allclose(g, e, atol=1e-6) for g, e in zip(got, without_stop, strict=True))


@pytest.mark.parametrize("name", ["byol", "simsiam"])
@pytest.mark.parametrize("source", ["digits", "cifar10"])
def test_a_training_step_gives_a_finite_loss_on_1_and_3_channels(name, source, shared_data):
    if source == "digits":
        images = digits()
    else:
        spec = "cifar10:" + str(shared_data / "cifar10")
        images = load_images(spec, "test").images[:16].float() / 255
    task = make(name, images)
    logs = task({"images": images})
    logs["loss"].backward()
    task.after_optimizer_step(0, 10)
    assert torch.isfinite(logs["loss"]) and math.isfinite(float(logs["embedding_std"]))
    assert set(task.show(images)) and all(
        v.shape[1] == images.shape[1] for v in task.show(images).values()
    )


@pytest.mark.parametrize(
    "name, options", [("moco", {"queue_size": 16}), ("byol", {}), ("simsiam", {})]
)
def test_a_few_steps_reduce_the_loss_on_a_tiny_dataset(name, options):
    """32 digits in two alternating batches (MoCo's queue then holds the other batch's keys).

    Mild crops: SimCLR-strength views of 8x8 digits take far more than a few steps to learn.
    """
    images = digits(32)
    task = make(name, images, augment=light_augment, **options)
    optimizer = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for step in range(40):
        torch.manual_seed(step)
        loss = task({"images": images[step % 2 :: 2]})["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        task.after_optimizer_step(step, 40)
        losses.append(float(loss.detach()))
    # Step 0 is skipped: MoCo's queue still holds its random initial keys then.
    first, last = sum(losses[1:6]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.1, losses


def _recipe(steps: int) -> Recipe:
    return Recipe(
        task="byol",
        task_options={"projection_dim": 16, "hidden_dim": 32},
        backbone="small_cnn",
        backbone_options={"width": 8},
        data="digits",
        train={"steps": steps, "batch_size": 16, "checkpoint_every": 3, "num_workers": 0},
    )


def test_byol_target_network_survives_checkpoint_and_resume(tmp_path, monkeypatch):
    pretrain_run(_recipe(8), tmp_path / "straight", progress=False)
    original = BYOL.after_optimizer_step

    def interrupt_at_5(self, step, total):
        original(self, step, total)
        if step == 4:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(BYOL, "after_optimizer_step", interrupt_at_5)
    with pytest.raises(SelfSupError, match="--resume"):
        pretrain_run(_recipe(8), tmp_path / "resumed", progress=False)
    monkeypatch.setattr(BYOL, "after_optimizer_step", original)
    pretrain_run(load_run(tmp_path / "resumed"), tmp_path / "resumed", resume=True, progress=False)

    straight = load_checkpoint(tmp_path / "straight" / CHECKPOINT)["task"]
    resumed = load_checkpoint(tmp_path / "resumed" / CHECKPOINT)["task"]
    assert straight.keys() == resumed.keys()
    assert any(k.startswith("target.") for k in straight)
    for key in straight:
        assert torch.allclose(straight[key].float(), resumed[key].float(), atol=1e-6), key
