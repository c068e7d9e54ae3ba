"""SimSiam: Exploring Simple Siamese Representation Learning.

Chen, He, CVPR 2021. https://arxiv.org/abs/2011.10566

Free labels: two views of an image go through the same encoder (backbone + projector); a small
bottleneck predictor maps one view's projection onto the other's, whose side is cut from the
gradient:  loss = -cos(p1, stopgrad(z2)) / 2 - cos(p2, stopgrad(z1)) / 2.
No negatives, no momentum encoder: the paper shows the stop-gradient alone prevents collapse
(without it the loss drops to -1 at once and the embeddings become constant).

Heads as in the paper's CIFAR variant: a 2-layer projector with BN on every layer, its output
BN without affine parameters, and a predictor with a 4x narrower hidden layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from selfsup.augment import simclr_augment, views_from
from selfsup.losses import embedding_std, negative_cosine
from selfsup.tasks.base import Batch, Task
from selfsup.tasks.simclr import projection_head


class SimSiam(Task):
    name = "simsiam"

    def __init__(
        self,
        backbone: nn.Module,
        image_shape: tuple[int, int, int],
        *,
        projection_dim: int = 512,
        hidden_dim: int | None = None,
        predictor_dim: int | None = None,
        augment: Callable[[torch.Tensor], torch.Tensor] | Mapping | None = None,
    ) -> None:
        super().__init__(backbone)
        channels, height, _ = image_shape
        self.augment = views_from(augment, simclr_augment(height, channels))
        hidden = hidden_dim or projection_dim
        self.projector = nn.Sequential(
            projection_head(backbone.feature_dim, hidden, projection_dim),
            nn.BatchNorm1d(projection_dim, affine=False),
        )
        bottleneck = predictor_dim or max(1, projection_dim // 4)
        self.predictor = projection_head(projection_dim, bottleneck, projection_dim)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = batch["images"]
        # Each view is its own BN batch, as in the paper's pseudocode.
        z1 = self.projector(self.encode(self.augment(images)))
        z2 = self.projector(self.encode(self.augment(images)))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = (negative_cosine(p1, z2) + negative_cosine(p2, z1)) / 2
        return {"loss": loss, "embedding_std": embedding_std(z1)}

    @torch.no_grad()
    def show(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        images = images[:8]  # the report's grids are 8 wide: one row per kind of picture
        views = torch.cat([images, self.augment(images), self.augment(images)])
        return {"SimSiam, rows: image, view 1, view 2": views}
