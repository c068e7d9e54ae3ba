"""Augmentation pipelines built from the batched ops: SimCLR views and light fine-tuning crops."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from selfsup.augment.ops import (
    color_jitter,
    gaussian_blur,
    horizontal_flip,
    random_grayscale,
    random_resized_crop,
    solarize,
)

# SimCLR's CIFAR recipe (Chen et al. 2020, appendix B.9) drops the blur for images this small.
SMALL_IMAGE = 32


@dataclass
class ViewAugment:
    """One SimCLR-style random view per image, same size as the input.

    crop -> flip -> colour jitter (p = jitter_p, strength s: brightness, contrast and saturation
    0.8 * s, hue 0.2 * s) -> grayscale -> blur -> solarize. `blur_p=None` means SimCLR's choice:
    no blur for images of at most 32 px, else 0.5.
    """

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_strength: float = 1.0
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float | None = None
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A random view of every image in the batch (float (B, C, H, W) in [0, 1])."""
        height, width = images.shape[-2:]
        s = self.jitter_strength
        x = random_resized_crop(
            images, (height, width), self.crop_scale, self.crop_ratio, generator=generator
        )
        x = horizontal_flip(x, self.flip_p, generator=generator)
        x = color_jitter(
            x, 0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s, p=self.jitter_p, generator=generator
        )
        x = random_grayscale(x, self.gray_p, generator=generator)
        blur_p = self.blur_p
        if blur_p is None:
            blur_p = 0.0 if max(height, width) <= SMALL_IMAGE else 0.5
        if blur_p > 0:
            x = gaussian_blur(x, self.blur_sigma, p=blur_p, generator=generator)
        if self.solarize_p > 0:
            x = solarize(x, p=self.solarize_p, generator=generator)
        return x


def simclr_augment(image_size: int, channels: int) -> ViewAugment:
    """SimCLR's view augmentation with defaults suited to the image size and channel count."""
    if image_size > SMALL_IMAGE:
        # ImageNet recipe: full-strength colour distortion, blur on half the views.
        return ViewAugment(jitter_strength=1.0, blur_p=0.5)
    if channels == 1:
        # MNIST-like images are a centred object on a blank background: an 8% crop of 28x28 is
        # a ~8x8 patch that is often pure background or a bare stroke, so two views share no
        # content and the task becomes noise. 20% keeps part of the object in every view.
        # Colour jitter reduces to brightness/contrast here, so it stays at SimCLR's CIFAR s.
        return ViewAugment(crop_scale=(0.2, 1.0), jitter_strength=0.5, blur_p=0.0)
    # SimCLR's CIFAR-10 recipe: crop (0.08, 1), flip, jitter strength 0.5, grayscale, no blur.
    return ViewAugment(crop_scale=(0.08, 1.0), jitter_strength=0.5, blur_p=0.0)


def light_augment(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mild crop (60-100% of the area) + flip: for fine-tuning and supervised baselines."""
    height, width = images.shape[-2:]
    x = random_resized_crop(images, (height, width), scale=(0.6, 1.0), generator=generator)
    return horizontal_flip(x, 0.5, generator=generator)
