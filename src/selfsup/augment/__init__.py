"""Batched tensor augmentations that run on the batch's device; one call augments a batch."""

from selfsup.augment.ops import (
    color_jitter,
    default_blur_kernel,
    gaussian_blur,
    horizontal_flip,
    random_grayscale,
    random_quarter_turns,
    random_resized_crop,
    random_translate,
    solarize,
)
from selfsup.augment.views import ViewAugment, light_augment, simclr_augment, views_from

__all__ = [
    "ViewAugment",
    "color_jitter",
    "default_blur_kernel",
    "gaussian_blur",
    "horizontal_flip",
    "light_augment",
    "random_grayscale",
    "random_quarter_turns",
    "random_resized_crop",
    "random_translate",
    "simclr_augment",
    "solarize",
    "views_from",
]
