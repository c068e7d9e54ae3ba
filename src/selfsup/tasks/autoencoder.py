"""Autoencoders: reconstruct the image from the backbone's code, in three variants.

- "plain": reconstruct x from x (the classic bottleneck autoencoder).
- "denoising": Vincent, Larochelle, Bengio, Manzagol, ICML 2008, "Extracting and Composing Robust
  Features with Denoising Autoencoders" (https://doi.org/10.1145/1390156.1390294): the input is
  corrupted with additive gaussian noise or masking noise (a random fraction of the pixels set
  to 0), the target is the clean image.
- "masked": in the spirit of MAE, He et al., CVPR 2022 (https://arxiv.org/abs/2111.06377): 75%
  of square patches are hidden (filled with the visible mean, since a CNN cannot drop tokens)
  and the loss counts the hidden patches only.

The encoder is the backbone, the decoder maps its feature vector back to the image; MSE loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.errors import SelfSupError
from selfsup.tasks.base import Batch, Task
from selfsup.tasks.generative import ImageDecoder, hide, masked_mse, picture_rows

KINDS = ("plain", "denoising", "masked")
NOISES = ("gaussian", "masking")
DEFAULT_MASK_RATIO = {"denoising": 0.25, "masked": 0.75}


def gaussian_noise(images: torch.Tensor, std: float) -> torch.Tensor:
    """Additive N(0, std^2) noise, clipped back to the valid [0, 1] pixel range."""
    return (images + std * torch.randn_like(images)).clamp(0, 1)


def pixel_mask(images: torch.Tensor, ratio: float) -> torch.Tensor:
    """(B, 1, H, W) float mask, 1 = dropped: each pixel independently with probability `ratio`."""
    n, _, height, width = images.shape
    return (torch.rand(n, 1, height, width, device=images.device) < ratio).float()


def patch_mask(images: torch.Tensor, patch_size: int, ratio: float) -> torch.Tensor:
    """(B, 1, H, W) float mask hiding round(ratio * patches) random square patches per image.

    Patches tile the image from the top-left; a partial last row/column is a patch too.
    """
    n, _, height, width = images.shape
    rows, cols = -(-height // patch_size), -(-width // patch_size)
    k = round(ratio * rows * cols)
    # The k smallest of per-patch random scores: exactly k patches, independently per image.
    scores = torch.rand(n, rows * cols, device=images.device)
    hidden = torch.zeros_like(scores)
    hidden.scatter_(1, scores.argsort(dim=1)[:, :k], 1.0)
    grid = hidden.view(n, 1, rows, cols)
    grid = grid.repeat_interleave(patch_size, 2).repeat_interleave(patch_size, 3)
    return grid[:, :, :height, :width].contiguous()


class Autoencoder(Task):
    name = "autoencoder"

    def __init__(
        self,
        backbone: nn.Module,
        image_shape: tuple[int, int, int],
        *,
        kind: str = "denoising",
        noise: str = "gaussian",
        noise_std: float = 0.3,
        mask_ratio: float | None = None,
        patch_size: int | None = None,
        decoder_width: int = 16,
    ) -> None:
        super().__init__(backbone)
        if kind not in KINDS:
            raise SelfSupError(f"unknown autoencoder kind {kind!r}; choose one of: {KINDS}")
        if noise not in NOISES:
            raise SelfSupError(f"unknown denoising noise {noise!r}; choose one of: {NOISES}")
        ratio = DEFAULT_MASK_RATIO.get(kind, 0.0) if mask_ratio is None else mask_ratio
        if not 0 <= ratio < 1:
            raise SelfSupError(f"mask_ratio must be in [0, 1), got {ratio}")
        _, height, width = image_shape
        self.kind, self.noise, self.noise_std, self.mask_ratio = kind, noise, noise_std, ratio
        # About 8x8 patches per image at 28-32 px, 4x4 at 8 px.
        self.patch_size = patch_size or (4 if min(height, width) >= 16 else 2)
        self.decoder = ImageDecoder(backbone.feature_dim, image_shape, decoder_width)

    def corrupt(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the encoder's input, the (B, 1, H, W) mask of pixels the loss counts)."""
        everywhere = torch.ones_like(images[:, :1])
        if self.kind == "plain":
            return images, everywhere
        if self.kind == "denoising":
            if self.noise == "gaussian":
                return gaussian_noise(images, self.noise_std), everywhere
            return images * (1 - pixel_mask(images, self.mask_ratio)), everywhere
        mask = patch_mask(images, self.patch_size, self.mask_ratio)
        return hide(images, mask), mask

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = batch["images"]
        corrupted, counted = self.corrupt(images)
        reconstruction = self.decoder(self.encode(corrupted))
        loss = masked_mse(reconstruction, images, counted)
        return {"loss": loss, "mse_all_pixels": F.mse_loss(reconstruction.detach(), images)}

    @torch.no_grad()
    def show(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        images = images[:8]
        corrupted, _ = self.corrupt(images)
        reconstruction = self.decoder(self.encode(corrupted))
        caption = f"Autoencoder ({self.kind}): rows = input, reconstruction, original"
        return {caption: picture_rows(corrupted, reconstruction, images)}
