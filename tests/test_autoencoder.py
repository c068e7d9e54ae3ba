"""Autoencoders: each variant corrupts as it claims, and the reconstruction loss goes down."""

from __future__ import annotations

import pytest
import torch

from selfsup.backbones import build_backbone
from selfsup.data import load_images
from selfsup.errors import SelfSupError
from selfsup.tasks.autoencoder import Autoencoder, patch_mask

pytestmark = pytest.mark.usefixtures("one_thread")


def make_task(shape=(1, 8, 8), **options) -> Autoencoder:
    torch.manual_seed(0)
    backbone = build_backbone("small_cnn", shape[0], shape[1], width=8)
    return Autoencoder(backbone, shape, **options)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_images("digits").images[:16].float() / 255


@pytest.fixture(scope="module")
def cifar(shared_data) -> torch.Tensor:
    return load_images("cifar10:" + str(shared_data / "cifar10"), "test").images[:8].float() / 255


def test_plain_input_is_the_image(digits):
    corrupted, counted = make_task(kind="plain").corrupt(digits)
    assert torch.equal(corrupted, digits) and torch.all(counted == 1)


def test_gaussian_noise_has_the_claimed_strength(digits):
    images = torch.full((64, 1, 8, 8), 0.5)
    torch.manual_seed(0)
    corrupted, counted = make_task(kind="denoising", noise_std=0.1).corrupt(images)
    assert (corrupted - images).std() == pytest.approx(0.1, rel=0.05)
    assert corrupted.min() >= 0 and corrupted.max() <= 1 and torch.all(counted == 1)


def test_masking_noise_zeroes_the_claimed_fraction(digits):
    images = torch.full((256, 1, 8, 8), 0.5)
    torch.manual_seed(0)
    task = make_task(kind="denoising", noise="masking", mask_ratio=0.4)
    corrupted, counted = task.corrupt(images)
    zeroed = corrupted == 0
    assert zeroed.float().mean() == pytest.approx(0.4, abs=0.02)
    assert torch.equal(corrupted[~zeroed], images[~zeroed])  # the rest untouched
    assert torch.all(counted == 1)  # Vincent et al.: the target is the whole clean image


def test_masked_variant_hides_patches_and_counts_only_them(digits):
    task = make_task(shape=(1, 28, 28), kind="masked")
    assert (task.patch_size, task.mask_ratio) == (4, 0.75)
    images = torch.rand(4, 1, 28, 28)
    torch.manual_seed(0)
    corrupted, counted = task.corrupt(images)
    # 7x7 patches of 4x4, 37 of 49 hidden (round(0.75 * 49)), in whole patches.
    patches = counted.view(4, 7, 4, 7, 4)
    assert torch.all(patches.amax((2, 4)) == patches.amin((2, 4)))
    assert torch.all(patches.amax((2, 4)).sum((1, 2)) == 37)
    hidden = counted.bool()
    assert torch.equal(corrupted[~hidden], images[~hidden])
    # Hidden pixels carry nothing of the image: each is its image's visible mean.
    for i in range(4):
        assert torch.allclose(corrupted[i][hidden[i]], images[i][~hidden[i]].mean())


def test_patch_mask_handles_partial_patches():
    torch.manual_seed(0)
    mask = patch_mask(torch.zeros(3, 1, 10, 10), patch_size=4, ratio=0.5)
    assert mask.shape == (3, 1, 10, 10)
    assert torch.all(mask.view(3, -1).sum(1) > 0)


@pytest.mark.parametrize("kind", ["plain", "denoising", "masked"])
def test_reconstruction_loss_decreases_on_a_tiny_batch(digits, kind):
    task = make_task(kind=kind)
    optimizer = torch.optim.AdamW(task.parameters(), lr=3e-3)
    losses = []
    for step in range(15):
        torch.manual_seed(step)
        loss = task({"images": digits})["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3


@pytest.mark.parametrize("kind", ["plain", "denoising", "masked"])
@pytest.mark.parametrize("data", ["digits", "cifar10"])
def test_a_training_step_on_1_and_3_channels(request, kind, data):
    images = request.getfixturevalue("digits" if data == "digits" else "cifar")[:8]
    task = make_task(tuple(images.shape[1:]), kind=kind)
    logs = task({"images": images})
    assert torch.isfinite(logs["loss"])
    logs["loss"].backward()
    (grid,) = task.eval().show(images).values()
    assert grid.shape == (24, *images.shape[1:])
    assert torch.equal(grid[16:], images)


def test_bad_options_are_reported():
    with pytest.raises(SelfSupError, match="masked"):
        make_task(kind="vae")
    with pytest.raises(SelfSupError, match="masking"):
        make_task(noise="salt")
    with pytest.raises(SelfSupError, match="mask_ratio"):
        make_task(kind="masked", mask_ratio=1.0)
