"""RotNet: Unsupervised Representation Learning by Predicting Image Rotations.

Gidaris, Singh, Komodakis, ICLR 2018. https://arxiv.org/abs/1803.07728

Free labels: every image is shown at 0, 90, 180 and 270 degrees in the same batch (the paper
finds this better than one random rotation per image) and a 4-way head predicts which rotation
it sees. Recognising the rotation requires recognising the object's canonical orientation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.augment import light_augment
from selfsup.errors import SelfSupError
from selfsup.tasks.base import Batch, Task


def rotate_all(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 4 rotations of every image (4B, C, H, W) and their labels k = quarter turns (4B,)."""
    rotated = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(4)])
    labels = torch.arange(4, device=images.device).repeat_interleave(images.shape[0])
    return rotated, labels


class Rotation(Task):
    name = "rotation"

    def __init__(
        self, backbone: nn.Module, image_shape: tuple[int, int, int], *, augment: bool = True
    ) -> None:
        super().__init__(backbone)
        _, height, width = image_shape
        if height != width:
            raise SelfSupError(
                f"rotation needs square images, got {height}x{width}; resize the data "
                "(e.g. folder:DIR images are made square by --image-size)"
            )
        self.augment = augment
        self.head = nn.Linear(backbone.feature_dim, 4)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = batch["images"]
        if self.augment:
            images = light_augment(images)
        rotated, labels = rotate_all(images)
        logits = self.head(self.encode(rotated))
        accuracy = (logits.argmax(1) == labels).float().mean()
        return {"loss": F.cross_entropy(logits, labels), "accuracy": accuracy}

    @torch.no_grad()
    def show(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        rotated, _ = rotate_all(images[:8])
        # One row per image: its 4 rotations, as the head sees them.
        grid = rotated.view(4, -1, *rotated.shape[1:]).transpose(0, 1).flatten(0, 1)
        return {"Rotation: the 4 rotations of each image (labels 0-3)": grid}
