"""Relative patch location (Doersch et al. 2015): labels, shortcut guards, training."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import check_patch_task_step

from selfsup.backbones import build_backbone
from selfsup.errors import SelfSupError
from selfsup.tasks import task_class
from selfsup.tasks.patches import (
    grid_corners,
    random_downsample,
    remove_chromatic_aberration,
)
from selfsup.tasks.relative_patch import CENTRE, NEIGHBOURS, RelativePatch

pytestmark = pytest.mark.usefixtures("one_thread")


def make_task(shape: tuple[int, int, int], **options) -> RelativePatch:
    backbone = build_backbone("small_cnn", in_channels=shape[0], image_size=shape[1], width=8)
    return RelativePatch(backbone, shape, **options)


def test_registered_under_its_cli_name() -> None:
    assert task_class("relative_patch") is RelativePatch


def test_default_grid_fits_small_images() -> None:
    for size, patch in [(28, 7), (32, 8)]:
        task = make_task((1, size, size))
        assert (task.patch_size, task.gap, task.jitter) == (patch, 2, 1)
        assert 2 * task.stride + task.patch_size + 2 * task.jitter <= size
    with pytest.raises(SelfSupError, match="3x3 grid"):
        make_task((1, 28, 28), patch_size=9, gap=2)


def test_label_names_the_cell_the_neighbour_comes_from() -> None:
    # 28 = 3 * 8 + 2 * 2: with no jitter the grid has exactly one place, so every cell can be
    # painted its own constant and the gaps a value no cell has.
    task = make_task((1, 28, 28), patch_size=8, gap=2, jitter=0)
    image = torch.zeros(1, 28, 28)
    for cell in range(9):
        r, c = divmod(cell, 3)
        image[:, 10 * r : 10 * r + 8, 10 * c : 10 * c + 8] = (cell + 1) / 10
    images = image.expand(64, 1, 28, 28)
    centre, neighbour, labels, _ = task.sample_pairs(images, torch.Generator().manual_seed(0))
    assert (centre == (CENTRE + 1) / 10).all()
    expected = (torch.tensor(NEIGHBOURS)[labels] + 1).float() / 10
    assert torch.equal(neighbour.amin(dim=(1, 2, 3)), expected)
    assert torch.equal(neighbour.amax(dim=(1, 2, 3)), expected)
    assert set(labels.tolist()) == set(range(8))


def coordinate_images(batch: int, size: int) -> torch.Tensor:
    """Channel 0 holds each pixel's row, channel 1 its column (in 1/255 steps)."""
    coords = torch.arange(size).float() / 255
    image = torch.stack(
        [coords.view(-1, 1).expand(size, size), coords.view(1, -1).expand(size, size)]
    )
    image = torch.cat([image, torch.zeros(1, size, size)])
    return image.expand(batch, 3, size, size)


def corner_of(patches: torch.Tensor) -> torch.Tensor:
    return (patches[:, :2, 0, 0] * 255).round().long()


def test_gap_and_jitter_are_honoured() -> None:
    task = make_task((3, 32, 32), gap=2, jitter=1)  # patch 8, stride 10
    images = coordinate_images(512, 32)
    centre, neighbour, labels, corners = task.sample_pairs(images, torch.Generator().manual_seed(1))
    rows = torch.arange(512)
    cells = torch.tensor(NEIGHBOURS)[labels]
    # The patches are the contiguous 8x8 windows at the drawn corners.
    assert torch.equal(corner_of(centre), corners[:, CENTRE])
    assert torch.equal(corner_of(neighbour), corners[rows, cells])
    steps = torch.arange(8).float() / 255
    assert torch.allclose(neighbour[:, 0, :, 0] - neighbour[:, 0, :1, 0], steps.expand(512, 8))
    # The offset between the two patches is the labelled cell's offset, give or take jitter.
    offset = corner_of(neighbour) - corner_of(centre)
    cell_offset = torch.stack([cells // 3 - 1, cells % 3 - 1], dim=1) * task.stride
    assert (offset - cell_offset).abs().max() == 2 * task.jitter
    # Each patch moves at most `jitter` from its cell; the grid as a whole moves freely.
    cell_origin = torch.stack(torch.meshgrid(torch.arange(3), torch.arange(3), indexing="ij"), -1)
    shifted = corners - cell_origin.view(1, 9, 2) * task.stride
    spread = shifted.amax(dim=1) - shifted.amin(dim=1)
    assert spread.max() == 2 * task.jitter
    assert corners.min() >= 0 and (corners + task.patch_size).max() <= 32


def test_no_jitter_keeps_patches_exactly_one_stride_apart() -> None:
    corners = grid_corners(64, 32, 8, 10, (0, 0), generator=torch.Generator().manual_seed(0))
    diffs = corners.view(64, 3, 3, 2)
    assert (diffs[:, :, 1:, 1] - diffs[:, :, :-1, 1] == 10).all()
    assert (diffs[:, 1:, :, 0] - diffs[:, :-1, :, 0] == 10).all()


def colour_patches(n: int = 64) -> torch.Tensor:
    # Values in [0.25, 0.75]: the projection then never needs clamping.
    return 0.25 + 0.5 * torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_projection_removes_the_green_magenta_axis_only() -> None:
    patches = colour_patches()
    out = remove_chromatic_aberration(patches, "project")
    axis = torch.tensor([-1.0, 2.0, -1.0]).view(1, 3, 1, 1) / math.sqrt(6)
    assert (out * axis).sum(1).abs().max() < 1e-5
    # Lightness (the channel mean) and blue-yellow (red - blue) are kept.
    assert torch.allclose(out.mean(1), patches.mean(1), atol=1e-5)
    assert torch.allclose(out[:, 0] - out[:, 2], patches[:, 0] - patches[:, 2], atol=1e-5)


def test_colour_dropping_keeps_one_channel_and_fills_the_others_with_faint_noise() -> None:
    patches = colour_patches(256)
    out = remove_chromatic_aberration(patches, "drop", generator=torch.Generator().manual_seed(0))
    kept = (out == patches).flatten(2).all(2)  # (N, 3)
    assert (kept.sum(1) == 1).all()
    assert set(kept.float().argmax(1).tolist()) == {0, 1, 2}
    kept_channel = patches[kept].view(256, 8, 8)
    dropped = out[~kept].view(256, 2, 8, 8)
    kept_std = kept_channel.std(dim=(1, 2)).view(256, 1)
    assert (dropped.std(dim=(2, 3)) < 0.02 * kept_std).all()
    assert (
        dropped.mean(dim=(2, 3)) - kept_channel.mean(dim=(1, 2)).view(256, 1)
    ).abs().max() < 0.01


def test_gray_probability_and_channel_rules() -> None:
    patches = colour_patches(400)
    gray = remove_chromatic_aberration(patches, "gray")
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    half = remove_chromatic_aberration(patches, "project", p=0.5)
    changed = (half != patches).flatten(1).any(1).float().mean()
    assert 0.4 < changed < 0.6
    assert torch.equal(remove_chromatic_aberration(patches, "project", p=0.0), patches)
    one_channel = patches[:, :1]
    assert torch.equal(remove_chromatic_aberration(one_channel, "drop"), one_channel)
    assert make_task((3, 32, 32)).chromatic == "project"
    assert make_task((1, 28, 28)).chromatic == "none"
    assert make_task((3, 32, 32), chromatic="none").chromatic == "none"
    with pytest.raises(SelfSupError, match="chromatic"):
        make_task((3, 32, 32), chromatic="sepia")


def test_downsampling_blurs_the_chosen_patches() -> None:
    checker = ((torch.arange(8).view(-1, 1) + torch.arange(8)) % 2).float()
    patches = checker.expand(1000, 1, 8, 8).clone()
    assert torch.equal(random_downsample(patches, p=0.0), patches)
    out = random_downsample(patches, p=1.0, min_scale=0.5)
    # A 1-pixel checkerboard cannot survive any shrink: every patch loses most of its contrast.
    assert (out.flatten(1).std(1) < 0.5 * patches.flatten(1).std(1)).all()
    half = random_downsample(patches, p=0.5, generator=torch.Generator().manual_seed(0))
    changed = (half != patches).flatten(1).any(1).float().mean()
    assert 0.45 < changed < 0.55
    assert half.shape == patches.shape


@pytest.mark.parametrize("channels", [1, 3])
def test_training_step_gives_a_finite_loss(real_images, channels: int) -> None:
    images = real_images(channels)
    size = images.shape[-1]
    check_patch_task_step(make_task((channels, size, size)), images)


def test_a_few_steps_reduce_the_loss(real_images) -> None:
    images = real_images(3)
    task = make_task((3, 32, 32))
    optimizer = torch.optim.Adam(task.parameters(), lr=3e-3)
    batch = {"images": images, "labels": torch.full((8,), -1), "indices": torch.arange(8)}

    def loss() -> torch.Tensor:
        torch.manual_seed(0)  # the same pairs every step: only the weights change
        return task(batch)["loss"]

    first = loss().item()
    for _ in range(8):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert loss().item() < 0.7 * first
