"""Barlow Twins: Self-Supervised Learning via Redundancy Reduction.

Zbontar, Jing, Misra, LeCun, Deny, ICML 2021. https://arxiv.org/abs/2103.03230

Free labels: two random augmentations of the same image. The backbone feeds a wide BN'd MLP
(the "projector"); the cross-correlation matrix of the two views' embeddings, each dimension
standardised over the global batch, is pushed towards the identity: diagonal 1 makes the
embedding invariant to the augmentations, off-diagonal 0 decorrelates its dimensions so it
cannot collapse. No negatives, no momentum encoder, no stop-gradient.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from selfsup.augment import ViewAugment, simclr_augment, views_from
from selfsup.losses import barlow_twins_loss
from selfsup.tasks.base import Batch, Task
from selfsup.tasks.simclr import projection_head, two_views


def expander(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """The 3-layer projector of Barlow Twins and VICReg: SimCLR's head, then BN-ReLU-Linear.

    The papers use 8192 units; quality grows with the width, cost with its square.
    """
    return nn.Sequential(
        *projection_head(in_dim, hidden_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim, bias=False),
    )


class BarlowTwins(Task):
    name = "barlow_twins"

    def __init__(
        self,
        backbone: nn.Module,
        image_shape: tuple[int, int, int],
        *,
        projection_dim: int = 1024,
        hidden_dim: int = 1024,
        lambd: float = 5e-3,
        augment: ViewAugment | Mapping | None = None,
    ) -> None:
        super().__init__(backbone)
        channels, height, _ = image_shape
        self.augment = views_from(augment, simclr_augment(height, channels))
        self.lambd = lambd
        self.projector = expander(backbone.feature_dim, hidden_dim, projection_dim)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = batch["images"]
        views = torch.cat([self.augment(images), self.augment(images)])
        z1, z2 = self.projector(self.encode(views)).chunk(2)
        return {"loss": barlow_twins_loss(z1, z2, self.lambd)}

    @torch.no_grad()
    def show(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"Barlow Twins, rows: image, view 1, view 2": two_views(self.augment, images)}
