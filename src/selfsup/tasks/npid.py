"""NPID: Unsupervised Feature Learning via Non-Parametric Instance Discrimination.

Wu, Xiong, Yu, Lin, CVPR 2018. https://arxiv.org/abs/1805.01978

Free labels: every image is its own class. One augmented view goes through the backbone and a
linear projection to 128-d, L2-normalised; a memory bank keeps a running average of each
image's embedding, and the view must pick its own bank row out of `num_negatives` random rows
of other images (temperature 0.07, bank momentum 0.5, as in the paper). The objective is
InfoNCE by default or the paper's binary NCE (`objective: nce`); see selfsup.losses.memory_bank.

The bank is updated inside training_step, under no_grad, after the loss has read it: with the
batch's embeddings from this forward pass, as in the paper's code. The bank is a buffer of the
task, so the checkpoint written after the step holds it and --resume is exact.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.augment import ViewAugment, views_from
from selfsup.errors import SelfSupError
from selfsup.losses.memory_bank import OBJECTIVES, MemoryBank
from selfsup.tasks.base import Batch, Task, require_positive
from selfsup.tasks.generative import picture_rows


def npid_augment() -> ViewAugment:
    """NPID's view: crop of 20-100% of the image, flip, colour jitter 0.4 (brightness and
    contrast only on 1-channel images), grayscale with p = 0.2, no blur."""
    return ViewAugment(crop_scale=(0.2, 1.0), jitter_strength=0.5, blur_p=0.0)


def require_dataset_size(dataset_size: int | None, task: str) -> int:
    if dataset_size is None:
        raise SelfSupError(
            f"{task} keeps one memory-bank row per image and needs dataset_size; build it with "
            "selfsup.recipe.build_task or pass dataset_size=len(dataset)"
        )
    return int(dataset_size)


def check_objective(objective: str, task: str) -> str:
    if objective not in OBJECTIVES:
        raise SelfSupError(
            f"{task}: unknown objective {objective!r}; choose one of: {', '.join(OBJECTIVES)}"
        )
    return objective


class NPID(Task):
    name = "npid"

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
        objective: str = "infonce",
        augment: ViewAugment | Mapping | None = None,
    ) -> None:
        super().__init__(backbone)
        require_positive(self.name, temperature=temperature)
        size = require_dataset_size(dataset_size, self.name)
        self.augment = views_from(augment, npid_augment())
        self.num_negatives = num_negatives
        self.temperature = temperature
        self.objective = check_objective(objective, self.name)
        self.projector = nn.Linear(backbone.feature_dim, projection_dim)
        self.bank = MemoryBank(size, projection_dim, momentum)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised 128-d embeddings of (already augmented) images."""
        return F.normalize(self.projector(self.encode(images)), dim=1)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        indices = batch["indices"]
        embeddings = self.embed(self.augment(batch["images"]))
        negatives = self.bank.negatives(self.num_negatives, exclude=indices)
        loss = self.bank.loss(embeddings, indices, negatives, self.temperature, self.objective)
        with torch.no_grad():
            # The bank's own row for each image: how well the view already finds itself.
            similarity = (embeddings * self.bank.rows[indices]).sum(dim=1).mean()
        self.bank.update(indices, embeddings)
        return {"loss": loss, "positive_similarity": similarity}

    @torch.no_grad()
    def show(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        images = images[:8]
        rows = picture_rows(images, self.augment(images), self.augment(images))
        return {"NPID: rows = image, two random views of it (each image is its own class)": rows}
