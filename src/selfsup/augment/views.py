"""Augmentation pipelines built from the batched ops: SimCLR views and light fine-tuning crops."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace

import torch

from selfsup.augment.ops import (
    color_jitter,
    gaussian_blur,
    horizontal_flip,
    random_grayscale,
    random_resized_crop,
    solarize,
)
from selfsup.errors import SelfSupError

# SimCLR's CIFAR recipe (Chen et al. 2020, appendix B.9) drops the blur for images this small.
SMALL_IMAGE = 32

# What a task calls to make views: a ViewAugment, or any function of a float batch.
Views = Callable[[torch.Tensor], torch.Tensor]


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

    def __post_init__(self) -> None:
        # Recipes give lists; checking here fails at build time, not hours into a run.
        self.crop_scale = _pair(self.crop_scale, "crop_scale")
        self.crop_ratio = _pair(self.crop_ratio, "crop_ratio")
        self.blur_sigma = _pair(self.blur_sigma, "blur_sigma")
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise SelfSupError(
                f"augment: crop_scale needs 0 < low <= high <= 1, got {self.crop_scale}"
            )
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise SelfSupError(f"augment: crop_ratio needs 0 < low <= high, got {self.crop_ratio}")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise SelfSupError(f"augment: blur_sigma needs 0 < low <= high, got {self.blur_sigma}")
        if not isinstance(self.jitter_strength, (int, float)) or self.jitter_strength < 0:
            raise SelfSupError(
                f"augment: jitter_strength must be a number >= 0, got {self.jitter_strength!r}"
            )
        for name in ("flip_p", "jitter_p", "gray_p", "blur_p", "solarize_p"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise SelfSupError(f"augment: {name} is a probability in [0, 1], got {value!r}")

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


def _pair(value, name: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise SelfSupError(
            f"augment: {name} must be two numbers [low, high], got {value!r}"
        ) from None
    return low, high


def views_from(option: Views | Mapping | None, default: ViewAugment) -> Views:
    """A task's view augmentation: its `default`, that default with the fields of a mapping
    changed (a recipe's `task_options: {augment: {crop_scale: [0.08, 1.0]}}`), or a ViewAugment
    (or any callable on a batch) used as given."""
    if option is None:
        return default
    if isinstance(option, Mapping):
        valid = [f.name for f in fields(ViewAugment)]
        unknown = sorted(str(key) for key in option if key not in valid)
        if unknown:
            raise SelfSupError(
                f"augment: unknown field(s) {', '.join(unknown)}; valid: {', '.join(valid)}"
            )
        return replace(default, **option)
    if not callable(option):
        raise SelfSupError(
            f"augment: expected fields of the views, e.g. {{crop_scale: [0.2, 1]}}, got {option!r}"
        )
    return option


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
