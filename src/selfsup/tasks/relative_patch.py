"""Context prediction: where is this patch relative to the centre one?

Doersch, Gupta, Efros, ICCV 2015, "Unsupervised Visual Representation Learning by Context
Prediction". https://arxiv.org/abs/1505.05192

Free labels: a 3x3 grid of patches is laid over each image, with a gap between patches and a
random jitter of each patch, so that edges continuing across patches and exact alignment give
nothing away. The centre patch and one of its 8 neighbours (uniform) go through the shared
encoder (the backbone); a pairwise head on the concatenated features says which neighbour it
was: 0 1 2 / 3 . 4 / 5 6 7 (row-major, centre skipped). Against the paper's other shortcuts,
colour patches lose their chromatic aberration cue and some patches are down- then up-sampled.

Defaults for small images: gap = size // 14 and jitter = size // 28 (28 or 32 px -> gap 2,
jitter 1; 8 px -> 0, 0), and the largest patch that then fits: (size - 2 gap - 2 jitter) // 3,
i.e. 7 px on 28 px, 8 px on 32 px. The paper's 96 px patches with a 48 px gap and 7 px jitter
are not possible at this size; a 2 px gap already breaks stroke continuity at 28-32 px while
leaving patches big enough to hold part of an object.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.errors import SelfSupError
from selfsup.tasks.base import Batch, Task
from selfsup.tasks.patches import (
    check_grid,
    encoder_input_size,
    gather_patches,
    grid_corners,
    paste_patches,
    random_downsample,
    remove_chromatic_aberration,
    resize_patches,
    resolve_chromatic,
)

# Grid cell (row-major 0..8) of each neighbour label 0..7.
NEIGHBOURS = (0, 1, 2, 3, 5, 6, 7, 8)
CENTRE = 4


def pair_head(in_dim: int, hidden_dim: int, classes: int) -> nn.Sequential:
    """The paper's fc7-fc8 on the two patches' concatenated features."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim, bias=False),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, classes),
    )


class RelativePatch(Task):
    name = "relative_patch"

    def __init__(
        self,
        backbone: nn.Module,
        image_shape: tuple[int, int, int],
        *,
        patch_size: int | None = None,
        gap: int | None = None,
        jitter: int | None = None,
        chromatic: str = "auto",
        chromatic_p: float = 1.0,
        downsample_p: float = 0.3,
        downsample_min: float = 0.5,
        input_size: int | None = None,
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__(backbone)
        channels, height, width = image_shape
        if height != width:
            raise SelfSupError(
                f"relative_patch needs square images, got {height}x{width}; resize the data "
                "(--image-size)"
            )
        self.image_size = height
        self.gap = height // 14 if gap is None else int(gap)
        self.jitter = height // 28 if jitter is None else int(jitter)
        if patch_size is None:
            patch_size = (height - 2 * self.gap - 2 * self.jitter) // 3
        self.patch_size = int(patch_size)
        self.stride = self.patch_size + self.gap
        if self.gap < 0 or self.jitter < 0:
            raise SelfSupError("relative_patch: gap and jitter must be >= 0")
        check_grid(height, self.patch_size, self.stride, (-self.jitter, self.jitter), self.name)
        self.chromatic = resolve_chromatic(chromatic, channels)
        self.chromatic_p = chromatic_p
        self.downsample_p = downsample_p
        self.downsample_min = downsample_min
        self.input_size = input_size or encoder_input_size(backbone, height, self.patch_size)
        feature_dim = backbone.feature_dim
        self.head = pair_head(2 * feature_dim, hidden_dim or feature_dim, len(NEIGHBOURS))

    def sample_pairs(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw centre and neighbour patches (B, C, p, p), labels 0..7 (B,), corners (B, 9, 2)."""
        b = images.shape[0]
        corners = grid_corners(
            b,
            self.image_size,
            self.patch_size,
            self.stride,
            (-self.jitter, self.jitter),
            images.device,
            generator,
        )
        gen_device = generator.device if generator is not None else images.device
        labels = torch.randint(0, 8, (b,), generator=generator, device=gen_device)
        labels = labels.to(images.device)
        cells = torch.tensor(NEIGHBOURS, device=images.device)[labels]
        rows = torch.arange(b, device=images.device)
        chosen = torch.stack([corners[:, CENTRE], corners[rows, cells]], dim=1)  # (B, 2, 2)
        patches = gather_patches(images, chosen, self.patch_size)
        return patches[:, 0], patches[:, 1], labels, corners

    def prepare(self, patches: torch.Tensor) -> torch.Tensor:
        """The shortcut guards, per patch: chromatic aberration, then down/up-sampling."""
        patches = remove_chromatic_aberration(patches, self.chromatic, self.chromatic_p)
        return random_downsample(patches, self.downsample_p, self.downsample_min)

    def classify(self, centre: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
        """Logits (B, 8) for prepared patch pairs; both go through the encoder in one batch."""
        pair = resize_patches(torch.cat([centre, neighbour]), self.input_size)
        features = self.encode(pair)
        return self.head(torch.cat(features.chunk(2), dim=1))

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        centre, neighbour, labels, _ = self.sample_pairs(batch["images"])
        prepared = self.prepare(torch.cat([centre, neighbour]))
        logits = self.classify(*prepared.chunk(2))
        accuracy = (logits.argmax(1) == labels).float().mean()
        return {"loss": F.cross_entropy(logits, labels), "accuracy": accuracy}

    @torch.no_grad()
    def show(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        images = images[:8]
        b = images.shape[0]
        centre, neighbour, labels, corners = self.sample_pairs(images)
        prepared = self.prepare(torch.cat([centre, neighbour]))
        predicted = self.classify(*prepared.chunk(2)).argmax(1)
        cells = torch.tensor(NEIGHBOURS, device=images.device)
        rows = torch.arange(b, device=images.device)
        pair = prepared.view(2, b, *prepared.shape[1:]).transpose(0, 1)  # (B, 2, C, p, p)

        def mosaic(neighbour_cells: torch.Tensor) -> torch.Tensor:
            canvas = torch.full_like(images, 0.5)
            where = torch.stack([corners[:, CENTRE], corners[rows, neighbour_cells]], dim=1)
            paste_patches(canvas, pair, where)
            return canvas

        grid = torch.full_like(images, 0.5)
        paste_patches(grid, gather_patches(images, corners, self.patch_size), corners)
        panels = [images, grid, mosaic(cells[labels]), mosaic(cells[predicted])]
        return {
            "Relative patch: image, its 3x3 grid, centre + neighbour at the true spot, "
            "at the predicted spot": torch.stack(panels, dim=1).flatten(0, 1)
        }
