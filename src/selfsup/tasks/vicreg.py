"""VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning.

Bardes, Ponce, LeCun, ICLR 2022. https://arxiv.org/abs/2105.04906

Free labels: two random augmentations of the same image. Their embeddings (backbone, then the
same 3-layer expander as Barlow Twins) are pulled together (invariance, MSE) while each
dimension keeps a standard deviation of at least 1 over the global batch (variance hinge) and
different dimensions stay decorrelated (covariance); the last two terms prevent collapse
without negatives. Weights 25 / 25 / 1 as in the paper.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from selfsup.augment import ViewAugment, simclr_augment, views_from
from selfsup.losses import vicreg_loss
from selfsup.tasks.barlow_twins import expander
from selfsup.tasks.base import Batch, Task
from selfsup.tasks.simclr import two_views


class VICReg(Task):
    name = "vicreg"

    def __init__(
        self,
        backbone: nn.Module,
        image_shape: tuple[int, int, int],
        *,
        projection_dim: int = 1024,
        hidden_dim: int = 1024,
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        augment: ViewAugment | Mapping | None = None,
    ) -> None:
        super().__init__(backbone)
        channels, height, _ = image_shape
        self.augment = views_from(augment, simclr_augment(height, channels))
        self.weights = {
            "sim_weight": sim_weight,
            "var_weight": var_weight,
            "cov_weight": cov_weight,
        }
        self.projector = expander(backbone.feature_dim, hidden_dim, projection_dim)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = batch["images"]
        views = torch.cat([self.augment(images), self.augment(images)])
        z1, z2 = self.projector(self.encode(views)).chunk(2)
        return vicreg_loss(z1, z2, **self.weights)

    @torch.no_grad()
    def show(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"VICReg, rows: image, view 1, view 2": two_views(self.augment, images)}
