"""SimCLR: A Simple Framework for Contrastive Learning of Visual Representations.

Chen, Kornblith, Norouzi, Hinton, ICML 2020. https://arxiv.org/abs/2002.05709

Free labels: two random augmentations of the same image are a positive pair; every other image
in the (global) batch is a negative. The backbone feeds a small MLP projection head and the
NT-Xent loss is applied to the projections; the backbone's features are what transfers.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from selfsup.augment import ViewAugment, simclr_augment, views_from
from selfsup.losses import nt_xent
from selfsup.tasks.base import Batch, Task, require_positive


def projection_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """SimCLR's 2-layer MLP head; the paper finds the space before it transfers better."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim, bias=False),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )


def two_views(augment: ViewAugment, images: torch.Tensor) -> torch.Tensor:
    """Pictures for the report: the first 8 images, then their first random views, then their
    second ones: three rows of the report's 8-wide grid, one image per column."""
    images = images[:8]
    return torch.cat([images, augment(images), augment(images)])


class SimCLR(Task):
    name = "simclr"

    def __init__(
        self,
        backbone: nn.Module,
        image_shape: tuple[int, int, int],
        *,
        projection_dim: int = 128,
        hidden_dim: int | None = None,
        temperature: float = 0.5,
        augment: ViewAugment | Mapping | None = None,
    ) -> None:
        super().__init__(backbone)
        require_positive(self.name, temperature=temperature)
        channels, height, _ = image_shape
        self.augment = views_from(augment, simclr_augment(height, channels))
        self.temperature = temperature
        feature_dim = backbone.feature_dim
        self.projector = projection_head(feature_dim, hidden_dim or feature_dim, projection_dim)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = batch["images"]
        views = torch.cat([self.augment(images), self.augment(images)])
        z1, z2 = self.projector(self.encode(views)).chunk(2)
        return {"loss": nt_xent(z1, z2, self.temperature)}

    @torch.no_grad()
    def show(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"SimCLR, rows: image, view 1, view 2": two_views(self.augment, images)}
