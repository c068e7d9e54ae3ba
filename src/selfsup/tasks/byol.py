"""BYOL: Bootstrap Your Own Latent, a new approach to self-supervised learning.

Grill, Strub, Altché, Tallec, Richemond et al., NeurIPS 2020. https://arxiv.org/abs/2006.07733

Free labels: the online network (backbone -> projector -> predictor) predicts the target
network's projection of another view of the same image. The target is an EMA of the online
backbone + projector and gets no gradient; there are no negatives. The predictor and the slowly
moving target are what keep the representation from collapsing to a constant.

Momentum follows the paper's schedule, tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2, from
tau_base (0.99 by default, as in the paper's ImageNet runs; short runs need a target that moves
at all) to 1 at the last step. The two views use the paper's asymmetric augmentation where it
applies at this size: the second view is solarized with probability 0.2, and above 32 px the
first is always blurred and the second with probability 0.1 (blur is dropped for images of at
most 32 px, as in SimCLR's CIFAR recipe).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import torch
from torch import nn

from selfsup.augment import ViewAugment, simclr_augment, views_from
from selfsup.losses import embedding_std, negative_cosine
from selfsup.tasks.base import Batch, Task
from selfsup.tasks.momentum import MomentumEncoder, cosine_momentum
from selfsup.tasks.simclr import projection_head


class BYOL(Task):
    name = "byol"

    def __init__(
        self,
        backbone: nn.Module,
        image_shape: tuple[int, int, int],
        *,
        projection_dim: int = 256,
        hidden_dim: int = 1024,
        base_momentum: float = 0.99,
        augment: Callable[[torch.Tensor], torch.Tensor] | Mapping | None = None,
    ) -> None:
        super().__init__(backbone)
        channels, height, _ = image_shape
        self.augment = views_from(augment, simclr_augment(height, channels))
        self.augment_target = self.augment
        if isinstance(self.augment, ViewAugment):
            target = {"solarize_p": 0.2}
            if augment is None and self.augment.blur_p > 0:
                # Where blur applies (above 32 px): the paper's 1.0 for one view, 0.1 for the
                # other. Views the user set are left as set.
                self.augment = dataclasses.replace(self.augment, blur_p=1.0)
                target["blur_p"] = 0.1
            self.augment_target = dataclasses.replace(self.augment, **target)
        self.base_momentum = base_momentum
        self.projector = projection_head(backbone.feature_dim, hidden_dim, projection_dim)
        self.predictor = projection_head(projection_dim, hidden_dim, projection_dim)
        self.target = MomentumEncoder(backbone, self.projector)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = batch["images"]
        v1, v2 = self.augment(images), self.augment_target(images)
        # Each view is its own BN batch, as in the paper's implementation.
        z1, z2 = self.projector(self.encode(v1)), self.projector(self.encode(v2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        t1, t2 = self.target(v1, self.channels_last), self.target(v2, self.channels_last)
        # The paper's symmetrised loss: (2 - 2 cos(p1, z2')) + (2 - 2 cos(p2, z1')).
        loss = 4 + 2 * (negative_cosine(p1, t2) + negative_cosine(p2, t1))
        return {"loss": loss, "embedding_std": embedding_std(z1)}

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        momentum = cosine_momentum(self.base_momentum, step + 1, total_steps)
        self.target.update(momentum, self.backbone, self.projector)

    @torch.no_grad()
    def show(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        images = images[:8]  # the report's grids are 8 wide: one row per kind of picture
        views = torch.cat([images, self.augment(images), self.augment_target(images)])
        return {"BYOL, rows: image, view 1, view 2 (solarized with p = 0.2)": views}
