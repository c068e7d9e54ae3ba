"""PIRL: Self-Supervised Learning of Pretext-Invariant Representations.

Misra & van der Maaten, CVPR 2020. https://arxiv.org/abs/1912.01991

Free labels: an image I and its jigsaw transform I_t must get the same representation. f(v_I)
is the backbone on an augmented view plus a linear projection to 128-d; g(v_It) encodes each of
the 9 jigsaw tiles with the SAME backbone, projects each to 128-d, concatenates them in a random
order and projects again to 128-d. Both are contrasted with m_I, the memory-bank row of image I
(a running average of f(v_I), momentum 0.5), against `num_negatives` rows of other images:

    loss = lambda * L(m_I, g(v_It)) + (1 - lambda) * L(m_I, f(v_I)),  lambda = 0.5

with L the InfoNCE objective by default or the paper's binary NCE (`objective: nce`), both at
temperature 0.07 (selfsup.losses.memory_bank). The bank is updated with f(v_I) inside
training_step, under no_grad, after the loss has read it; it is a buffer, so resume is exact.

Tiles come from the jigsaw task's grid maker (selfsup.tasks.patches): a 3x3 grid of cells, a
tile cropped at a random offset in each cell, taken from a random 60-100% crop of the image
(VISSL's PIRL recipe), with colour jitter and grayscale drawn per tile.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.augment import (
    ViewAugment,
    color_jitter,
    random_grayscale,
    random_resized_crop,
    views_from,
)
from selfsup.errors import SelfSupError
from selfsup.losses.memory_bank import MemoryBank
from selfsup.tasks.base import Batch, Task, require_positive
from selfsup.tasks.generative import picture_rows
from selfsup.tasks.jigsaw import TILES, shuffle_tiles
from selfsup.tasks.npid import check_objective, npid_augment, require_dataset_size
from selfsup.tasks.patches import (
    check_grid,
    encoder_input_size,
    gather_patches,
    grid_corners,
    paste_patches,
    resize_patches,
)


class PIRL(Task):
    name = "pirl"

    def __init__(
        self,
        backbone: nn.Module,
        image_shape: tuple[int, int, int],
        *,
        dataset_size: int | None = None,
        projection_dim: int = 128,
        num_negatives: int = 4096,
        temperature: float = 0.07,
        momentum: float = 0.5,
        jigsaw_weight: float = 0.5,
        objective: str = "infonce",
        tile_crop_scale: tuple[float, float] = (0.6, 1.0),
        augment: ViewAugment | Mapping | None = None,
    ) -> None:
        """Tile geometry follows the jigsaw task: cells a third of the image, tiles a quarter
        smaller than their cell (28 px -> 7 px tiles in 9 px cells; 32 px -> 8 in 10)."""
        super().__init__(backbone)
        require_positive(self.name, temperature=temperature)
        size = require_dataset_size(dataset_size, self.name)
        _, height, width = image_shape
        if height != width:
            raise SelfSupError(
                f"pirl needs square images, got {height}x{width}; resize the data (--image-size)"
            )
        if not 0.0 <= jigsaw_weight <= 1.0:
            raise SelfSupError(f"pirl: jigsaw_weight must be in [0, 1], got {jigsaw_weight}")
        self.image_size = height
        self.cell_size = height // 3
        jitter = self.cell_size // 4
        self.tile_size = self.cell_size - jitter
        self.jitter = (0, jitter)
        check_grid(height, self.tile_size, self.cell_size, self.jitter, self.name)
        self.input_size = encoder_input_size(backbone, height, self.tile_size)
        self.tile_crop_scale = tuple(tile_crop_scale)
        self.augment = views_from(augment, npid_augment())
        self.num_negatives = num_negatives
        self.temperature = temperature
        self.jigsaw_weight = jigsaw_weight
        self.objective = check_objective(objective, self.name)
        feature_dim = backbone.feature_dim
        self.image_head = nn.Linear(feature_dim, projection_dim)  # f
        self.tile_head = nn.Linear(feature_dim, projection_dim)  # g, per tile
        self.jigsaw_head = nn.Linear(TILES * projection_dim, projection_dim)  # g, after concat
        self.bank = MemoryBank(size, projection_dim, momentum)

    def make_tiles(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Shuffled, per-tile augmented tiles (B, 9, C, t, t), the crop they were cut from and
        their corners (B, 9, 2) in it (position i holds the tile of cell perms[:, i])."""
        b = images.shape[0]
        crops = random_resized_crop(images, self.image_size, self.tile_crop_scale)
        corners = grid_corners(
            b, self.image_size, self.tile_size, self.cell_size, self.jitter, images.device
        )
        tiles = gather_patches(crops, corners, self.tile_size).flatten(0, 1)
        tiles = random_grayscale(color_jitter(tiles), p=0.2)
        perms = torch.rand(b, TILES, device=images.device).argsort(dim=1)
        return shuffle_tiles(tiles.view(b, TILES, *tiles.shape[1:]), perms), crops, corners

    def image_embedding(self, views: torch.Tensor) -> torch.Tensor:
        """f(v_I), L2-normalised."""
        return F.normalize(self.image_head(self.encode(views)), dim=1)

    def jigsaw_embedding(self, tiles: torch.Tensor) -> torch.Tensor:
        """g(v_It), L2-normalised, for (B, 9, C, t, t) tiles."""
        b = tiles.shape[0]
        features = self.encode(resize_patches(tiles.flatten(0, 1), self.input_size))
        per_tile = self.tile_head(features).view(b, -1)
        return F.normalize(self.jigsaw_head(per_tile), dim=1)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        images, indices = batch["images"], batch["indices"]
        tiles, _, _ = self.make_tiles(images)
        f = self.image_embedding(self.augment(images))
        g = self.jigsaw_embedding(tiles)
        negatives = self.bank.negatives(self.num_negatives, exclude=indices)
        args = (indices, negatives, self.temperature, self.objective)
        loss_jigsaw = self.bank.loss(g, *args)
        loss_image = self.bank.loss(f, *args)
        loss = self.jigsaw_weight * loss_jigsaw + (1 - self.jigsaw_weight) * loss_image
        self.bank.update(indices, f)
        return {
            "loss": loss,
            "loss_jigsaw": loss_jigsaw.detach(),
            "loss_image": loss_image.detach(),
        }

    @torch.no_grad()
    def show(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        images = images[:8]
        tiles, crops, corners = self.make_tiles(images)
        mosaic = torch.full_like(images, 0.5)
        paste_patches(mosaic, tiles, corners)
        caption = (
            "PIRL: rows = image, its view v_I, the crop the tiles are cut from, its shuffled "
            "tiles v_It (colour-jittered one by one)"
        )
        return {caption: picture_rows(images, self.augment(images), crops, mosaic)}
