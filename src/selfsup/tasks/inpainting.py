"""Context Encoders: Feature Learning by Inpainting.

Pathak, Krähenbühl, Donahue, Darrell, Efros, CVPR 2016. https://arxiv.org/abs/1604.07379

Free labels: a region of each image is blanked out (filled with the mean of the visible pixels)
and the network must paint it back. The encoder (the backbone, which only ever sees the masked
image) gives a code, a decoder predicts the whole image, and the loss is L2 on the hidden pixels,
plus, in the paper's joint loss, an adversarial term from a discriminator that judges the image
with the prediction pasted into the hole (0.999 L2 + 0.001 adversarial). Differences from the
paper: the decoder reads the pooled feature vector (no channel-wise FC on a spatial map), and the
L2 loss does not up-weight the hole's border.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.backbones import build_backbone
from selfsup.errors import SelfSupError
from selfsup.tasks.base import Batch, Task
from selfsup.tasks.generative import (
    Critic,
    ImageDecoder,
    box_mask,
    discriminator_loss,
    generator_loss,
    hide,
    masked_mse,
    picture_rows,
    score_with_frozen_critic,
)

MASKS = ("center", "block", "random")
LOSSES = ("l2", "adversarial", "joint")
# The hole covers a quarter of the image, like the paper's central 64x64 of 128x128 images.
HOLE_FRACTION = 0.25


def center_mask(n: int, height: int, width: int, device=None) -> torch.Tensor:
    """(n, 1, H, W) float mask, 1 = hidden: the central block of half the height and width."""
    mask = torch.zeros(n, 1, height, width, device=device)
    h, w = height // 2, width // 2
    top, left = (height - h) // 2, (width - w) // 2
    mask[:, :, top : top + h, left : left + w] = 1
    return mask


def block_mask(n: int, height: int, width: int, device=None) -> torch.Tensor:
    """A block of the central block's size at a uniformly random place in each image."""
    h, w = height // 2, width // 2
    top = torch.randint(0, height - h + 1, (n,), device=device)
    left = torch.randint(0, width - w + 1, (n,), device=device)
    return box_mask(top, left, h, w, height, width)


def random_mask(n: int, height: int, width: int, device=None) -> torch.Tensor:
    """Random blob-shaped holes covering a quarter of each image.

    The paper's random regions are object-shaped (from PASCAL segmentations); smooth noise
    thresholded at each image's 75th percentile gives free-form blobs of exactly that area.
    """
    coarse = torch.rand(n, 1, max(2, height // 4), max(2, width // 4), device=device)
    smooth = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    smooth = smooth + 1e-6 * torch.rand_like(smooth)  # break ties so the area is exact
    k = round(HOLE_FRACTION * height * width)
    threshold = smooth.flatten(1).topk(k, dim=1).values[:, -1].view(n, 1, 1, 1)
    return (smooth >= threshold).float()


MASK_MAKERS = {"center": center_mask, "block": block_mask, "random": random_mask}


class Inpainting(Task):
    name = "inpainting"

    def __init__(
        self,
        backbone: nn.Module,
        image_shape: tuple[int, int, int],
        *,
        mask: str = "center",
        loss: str = "joint",
        l2_weight: float = 0.999,
        adversarial_weight: float = 0.001,
        decoder_width: int = 16,
    ) -> None:
        super().__init__(backbone)
        if mask not in MASKS:
            raise SelfSupError(
                f"unknown inpainting mask {mask!r}; choose one of: {', '.join(MASKS)}"
            )
        if loss not in LOSSES:
            raise SelfSupError(
                f"unknown inpainting loss {loss!r}; choose one of: {', '.join(LOSSES)}"
            )
        self.mask, self.loss = mask, loss
        # "l2" and "adversarial" alone are the paper's ablations: one term with weight 1.
        self.l2_weight = {"l2": 1.0, "adversarial": 0.0}.get(loss, l2_weight)
        self.adversarial_weight = {"l2": 0.0, "adversarial": 1.0}.get(loss, adversarial_weight)
        self.decoder = ImageDecoder(backbone.feature_dim, image_shape, decoder_width)
        # The paper's discriminator is a conv net like the encoder: a fresh copy of the backbone.
        self.critic = Critic(build_backbone(**backbone.config)) if loss != "l2" else None

    def make_mask(self, images: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        return MASK_MAKERS[self.mask](n, height, width, device=images.device)

    def inpaint(
        self, images: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(masked input, predicted image, prediction pasted into the hole of the original)."""
        masked = hide(images, mask)
        prediction = self.decoder(self.encode(masked))
        filled = images * (1 - mask) + prediction * mask
        return masked, prediction, filled

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = batch["images"]
        mask = self.make_mask(images)
        _, prediction, filled = self.inpaint(images, mask)
        l2 = masked_mse(prediction, images, mask)
        logs = {"l2": l2}
        loss = self.l2_weight * l2
        if self.critic is not None:
            self.critic.channels_last = self.channels_last
            adversarial = generator_loss("bce", score_with_frozen_critic(self.critic, filled))
            real, fake = self.critic(images), self.critic(filled.detach())
            d_loss = discriminator_loss("bce", real, fake)
            loss = loss + self.adversarial_weight * adversarial + d_loss
            logs.update(
                adversarial=adversarial,
                d_loss=d_loss,
                d_real=torch.sigmoid(real).mean(),
                d_fake=torch.sigmoid(fake).mean(),
            )
        return {"loss": loss, **logs}

    @torch.no_grad()
    def show(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        images = images[:8]
        masked, _, filled = self.inpaint(images, self.make_mask(images))
        caption = f"Inpainting ({self.mask} mask): rows = masked input, inpainted, original"
        return {caption: picture_rows(masked, filled, images)}
