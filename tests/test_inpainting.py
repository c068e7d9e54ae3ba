"""Context encoder: masks, the hole-only L2 loss, what the encoder sees, the joint loss."""

from __future__ import annotations

import pytest
import torch

from selfsup.backbones import build_backbone
from selfsup.data import load_images
from selfsup.errors import SelfSupError
from selfsup.tasks.generative import masked_mse
from selfsup.tasks.inpainting import Inpainting, block_mask, center_mask, random_mask

pytestmark = pytest.mark.usefixtures("one_thread")


def make_task(shape=(1, 8, 8), **options) -> Inpainting:
    torch.manual_seed(0)
    backbone = build_backbone("small_cnn", shape[0], shape[1], width=8)
    return Inpainting(backbone, shape, **options)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_images("digits").images[:16].float() / 255


@pytest.fixture(scope="module")
def real_batches(shared_data) -> dict[str, torch.Tensor]:
    fmnist = load_images("fashion-mnist:" + str(shared_data / "fashion-mnist"), "test")
    cifar = load_images("cifar10:" + str(shared_data / "cifar10"), "test")
    return {
        "fmnist": fmnist.images[:8].float() / 255,
        "cifar10": cifar.images[:8].float() / 255,
    }


@pytest.mark.parametrize("size", [8, 28, 32])
def test_center_mask_is_the_central_quarter(size):
    mask = center_mask(2, size, size)
    quarter, half = size // 4, size // 2
    expected = torch.zeros(size, size)
    expected[quarter : quarter + half, quarter : quarter + half] = 1
    assert torch.equal(mask[0, 0], expected) and torch.equal(mask[1, 0], expected)
    assert mask.mean() == 0.25


def test_block_mask_is_one_quarter_block_at_random_places():
    torch.manual_seed(0)
    mask = block_mask(64, 28, 28)[:, 0]
    assert torch.all(mask.sum((1, 2)) == 14 * 14)
    tops = set()
    for m in mask:
        rows, cols = m.nonzero(as_tuple=True)
        # A solid 14x14 rectangle: its bounding box is 14x14 and fully covered.
        assert rows.max() - rows.min() + 1 == 14 and cols.max() - cols.min() + 1 == 14
        tops.add((int(rows.min()), int(cols.min())))
    assert len(tops) > 20  # not always the same place


def test_random_mask_covers_a_quarter_and_differs_per_image():
    torch.manual_seed(0)
    mask = random_mask(16, 32, 32)
    assert torch.all(mask.sum((1, 2, 3)) == 256)
    assert not torch.equal(mask[0], mask[1])
    assert torch.equal(mask, (mask > 0).float())


def test_reconstruction_loss_counts_only_the_hole(digits):
    task = make_task(loss="l2")
    images = digits[:8]
    outside = 1 - center_mask(1, 8, 8)

    def l2_with(change: torch.Tensor | None) -> float:
        handle = None
        if change is not None:
            handle = task.decoder.register_forward_hook(lambda m, i, out: out + change)
        torch.manual_seed(1)
        value = float(task.training_step({"images": images})["l2"].detach())
        if handle:
            handle.remove()
        return value

    base = l2_with(None)
    assert l2_with(0.3 * outside) == pytest.approx(base, abs=1e-7)
    assert l2_with(0.3 * (1 - outside)) != pytest.approx(base, abs=1e-4)
    # The helper itself: pixels with mask 0 do not count, the mean is over the hole.
    target = torch.zeros(1, 1, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert float(masked_mse(torch.tensor([[[[2.0, 9.0], [9.0, 9.0]]]]), target, mask)) == 4.0


@pytest.mark.parametrize("mask", ["center", "block", "random"])
def test_encoder_never_sees_the_hidden_pixels(digits, mask):
    task = make_task(mask=mask)
    images = digits[:8]
    seen: list[torch.Tensor] = []
    task.backbone.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))

    torch.manual_seed(3)
    hole = task.make_mask(images).bool().expand_as(images)
    changed_inside = torch.where(hole, torch.rand_like(images), images)
    changed_outside = torch.where(hole, images, torch.rand_like(images))
    for version in (images, changed_inside, changed_outside):
        torch.manual_seed(3)  # the same masks in every step
        task.training_step({"images": version})
    assert torch.equal(seen[0], seen[1])
    assert not torch.equal(seen[0], seen[2])


def test_joint_loss_weights_default_to_the_papers(digits):
    task = make_task()
    assert (task.loss, task.l2_weight, task.adversarial_weight) == ("joint", 0.999, 0.001)
    logs = task.training_step({"images": digits[:8]})
    expected = 0.999 * logs["l2"] + 0.001 * logs["adversarial"] + logs["d_loss"]
    assert torch.allclose(logs["loss"], expected)
    l2_only, adversarial_only = make_task(loss="l2"), make_task(loss="adversarial")
    assert l2_only.critic is None and (l2_only.l2_weight, l2_only.adversarial_weight) == (1, 0)
    assert (adversarial_only.l2_weight, adversarial_only.adversarial_weight) == (0, 1)


def test_adversarial_term_trains_the_encoder_not_the_critic(digits):
    task = make_task(loss="adversarial")
    logs = task.training_step({"images": digits[:8]})
    logs["adversarial"].backward(retain_graph=True)
    assert all(p.grad is None for p in task.critic.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.decoder.parameters())
    task.zero_grad(set_to_none=True)
    logs["d_loss"].backward()
    assert all(p.grad is None for p in task.decoder.parameters())
    assert all(p.grad is None for p in task.backbone.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.critic.parameters())


@pytest.mark.parametrize("data", ["digits", "fmnist", "cifar10"])
@pytest.mark.parametrize("mask", ["center", "random"])
def test_a_training_step_on_1_and_3_channels(request, data, mask):
    images = (
        request.getfixturevalue("digits")[:8]
        if data == "digits"
        else request.getfixturevalue("real_batches")[data]
    )
    task = make_task(tuple(images.shape[1:]), mask=mask)
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in task.critic.parameters()]
    logs = task({"images": images})
    assert torch.isfinite(logs["loss"])
    logs["loss"].backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, task.critic.parameters(), strict=True))
    pictures = task.eval().show(images)
    (grid,) = pictures.values()
    assert grid.shape == (24, *images.shape[1:])
    assert torch.equal(grid[16:], images)  # last row: the originals


def test_bad_options_name_the_choices():
    with pytest.raises(SelfSupError, match="center"):
        make_task(mask="square")
    with pytest.raises(SelfSupError, match="joint"):
        make_task(loss="l1")
