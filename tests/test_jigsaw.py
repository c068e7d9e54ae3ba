"""Jigsaw puzzles (Noroozi & Favaro 2016): permutation set, tiles, training."""

from __future__ import annotations

import pytest
import torch
from conftest import check_patch_task_step

from selfsup.backbones import build_backbone
from selfsup.tasks import task_class
from selfsup.tasks.jigsaw import (
    TILES,
    Jigsaw,
    _all_permutations,
    min_hamming,
    permutation_set,
    shuffle_tiles,
    unshuffle_tiles,
)
from selfsup.tasks.patches import paste_patches

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))


def make_task(shape: tuple[int, int, int], **options) -> Jigsaw:
    backbone = build_backbone("small_cnn", in_channels=shape[0], image_size=shape[1], width=8)
    return Jigsaw(backbone, shape, **options)


def test_registered_under_its_cli_name() -> None:
    assert task_class("jigsaw") is Jigsaw


def test_permutation_set_is_greedy_max_min_without_duplicates() -> None:
    perms = permutation_set(100, seed=0)
    assert perms.shape == (100, TILES)
    assert (perms.sort(dim=1).values == torch.arange(TILES)).all()
    assert len(torch.unique(perms, dim=0)) == 100
    # The claimed minimum distance, computed over all 100 * 99 / 2 pairs.
    assert min_hamming(perms) == 6
    # Greedy: each added permutation is as far from those before it as any candidate can be.
    candidates = _all_permutations().long()
    nearest = torch.full((len(candidates),), TILES)
    for k in range(1, 12):
        nearest = torch.minimum(nearest, (candidates != perms[k - 1]).sum(1))
        assert (perms[k] != perms[:k]).sum(1).min() == nearest.max()


def test_permutation_set_is_deterministic_per_seed_and_cached(tmp_path) -> None:
    compute = permutation_set.__wrapped__  # past the in-process cache, to the disk one
    first = compute(20, seed=3)
    assert list((tmp_path / "selfsup" / "jigsaw").glob("*20_seed3.npy"))
    assert torch.equal(compute(20, seed=3), first)
    assert torch.equal(permutation_set(20, seed=3), first)
    assert not torch.equal(compute(20, seed=4), first)


def test_identity_is_class_zero_only_when_asked() -> None:
    with_identity = permutation_set(20, seed=0, include_identity=True)
    assert torch.equal(with_identity[0], torch.arange(TILES))
    assert not torch.equal(permutation_set(20, seed=0)[0], torch.arange(TILES))


def test_tiles_reassemble_exactly_under_the_inverse_permutation() -> None:
    # 24 px, 8 px cells and no jitter: the tiles cover the image exactly.
    task = make_task((3, 24, 24), jitter=0, permutations=20)
    images = torch.rand(16, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    shuffled, labels, corners = task.make_puzzles(images, torch.Generator().manual_seed(0))
    perms = task.permutations[labels]
    tiles = torch.stack(
        [images[:, :, r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] for r in range(3) for c in range(3)],
        dim=1,
    )
    assert torch.equal(shuffled, shuffle_tiles(tiles, perms))
    assert torch.equal(shuffled[:, 0], tiles[torch.arange(16), perms[:, 0]])
    canvas = torch.zeros_like(images)
    paste_patches(canvas, unshuffle_tiles(shuffled, perms), corners)
    assert torch.equal(canvas, images)


def test_jittered_tiles_stay_inside_their_cells() -> None:
    task = make_task((1, 28, 28), permutations=20)  # 9 px cells, 7 px tiles
    assert (task.cell_size, task.tile_size) == (9, 7)
    _, _, corners = task.make_puzzles(torch.rand(256, 1, 28, 28))
    cells = torch.stack(torch.meshgrid(torch.arange(3), torch.arange(3), indexing="ij"), -1)
    # What is left after removing each cell's place is the grid's origin plus the tile's jitter.
    shifted = corners - cells.view(1, 9, 2) * task.cell_size
    spread = shifted.amax(dim=1) - shifted.amin(dim=1)
    assert spread.max() == task.jitter
    assert corners.min() >= 0 and (corners + task.tile_size).max() <= 28


@pytest.mark.parametrize("channels", [1, 3])
def test_training_step_gives_a_finite_loss(real_images, channels: int) -> None:
    images = real_images(channels)
    size = images.shape[-1]
    check_patch_task_step(make_task((channels, size, size)), images)


def test_a_few_steps_reduce_the_loss(real_images) -> None:
    images = real_images(1)
    task = make_task((1, 28, 28), permutations=10)
    optimizer = torch.optim.Adam(task.parameters(), lr=3e-3)
    batch = {"images": images, "labels": torch.full((8,), -1), "indices": torch.arange(8)}

    def loss() -> torch.Tensor:
        torch.manual_seed(0)  # the same puzzles every step: only the weights change
        return task(batch)["loss"]

    first = loss().item()
    for _ in range(8):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert loss().item() < 0.7 * first
