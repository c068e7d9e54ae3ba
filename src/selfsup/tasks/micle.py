"""MICLe: Multi-Instance Contrastive Learning.

Azizi et al., "Big Self-Supervised Models Advance Medical Image Classification", ICCV 2021.
https://arxiv.org/abs/2101.05224

Free labels: when a group (a patient, a case) has several images, two *different* images of it,
each augmented as in SimCLR, are a positive pair; views of other images in the (global) batch
are negatives. Groups with a single image fall back to SimCLR's two views of that image. The
positives then differ by what varies between images of one case (viewpoint, lighting, field of
view), not only by synthetic augmentation. SimCLR's projection head and NT-Xent are reused.
The data must carry groups: `--data grouped:manifest.csv` gives each batch "partners".
"""

from __future__ import annotations

import torch

from selfsup.errors import SelfSupError
from selfsup.losses import nt_xent
from selfsup.tasks.base import Batch
from selfsup.tasks.simclr import SimCLR, two_views


class MICLe(SimCLR):
    """SimCLR whose second view comes from another image of the same group."""

    name = "micle"

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        if "partners" not in batch:
            raise SelfSupError(
                "micle needs grouped data: use --data grouped:manifest.csv (columns "
                "path,group[,label]) or --data grouped:DIR (one sub-folder of images per group)"
            )
        images, partners = batch["images"], batch["partners"]
        views = torch.cat([self.augment(images), self.augment(partners)])
        z1, z2 = self.projector(self.encode(views)).chunk(2)
        # Share of pairs built from two different images (1 - share fell back to SimCLR).
        distinct = (images != partners).flatten(1).any(1).float().mean()
        return {"loss": nt_xent(z1, z2, self.temperature), "distinct_pairs": distinct}

    @torch.no_grad()
    def show(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        # The report gets single images without their groups, so it shows the augmentation
        # each image of a pair gets; in training the second view comes from the partner image.
        return {"MICLe, rows: image, view 1, view 2": two_views(self.augment, images)}
