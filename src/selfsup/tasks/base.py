"""The common face of every pretext task.

The engine, the CLI and the evaluation only ever call what is defined here, so a new task is a
new file and nothing else changes.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from selfsup.backbones import feature_map
from selfsup.errors import SelfSupError

Batch = dict[str, torch.Tensor]
"""A training batch on the task's device.

Image tasks get "images" (float32 (B, C, H, W) in [0, 1]), "labels" (int64, -1 = none; pretext
tasks must not use them), "indices" (int64 position of each sample in the dataset) and "step"
(a 0-dim int64 tensor: the training step, which the engine's seeding and resume follow too).
Datasets add their own extras: grouped data "partners" and "groups"; video data also "clips"
(float (B, T, C, H, W), the clip each frame comes from), see selfsup.data.video.
"""


def require_positive(task: str, **values: float) -> None:
    """Refuse options that must be > 0 (a softmax temperature) before any training: a 0 there
    is a NaN loss at the first step."""
    for name, value in values.items():
        if not (isinstance(value, (int, float)) and value > 0):
            raise SelfSupError(f"{task}: {name} must be a number > 0, got {value!r}")


class Task(nn.Module):
    """A pretext task: it makes labels from the data itself, owns its heads and its loss.

    `backbone` is what is kept and transferred; everything else (heads, predictors, memory
    banks) lives in the task and is dropped after pretraining.
    """

    name: ClassVar[str] = "task"
    # Video tasks train on batch["clips"]; their show() gets clips (N, T, C, H, W) too.
    takes_clips: ClassVar[bool] = False

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        # Set by the engine; channels_last speeds up convolutions on GPUs with tensor cores.
        self.channels_last = False

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        # Calling the module (not training_step) lets DDP wrappers see the forward pass.
        return self.training_step(batch)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features of float images, in the memory format the engine chose."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.backbone(images)

    def encode_map(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's feature map (B, C, h, w) before pooling, in the engine's memory format."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return feature_map(self.backbone, images)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Return {"loss": scalar tensor, ...}; every other entry is logged as a float."""
        raise NotImplementedError

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """Hook for state that follows the weights (momentum encoders, queues). Default: none."""

    @torch.no_grad()
    def show(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pictures of what the task makes or produces, for the report.

        Returns {caption: uint8 or float image grid (N, C, H, W)}; default: the task shows nothing.
        """
        return {}
