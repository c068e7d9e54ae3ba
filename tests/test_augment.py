"""Properties of the batched augmentations (not pixel values)."""

from __future__ import annotations

import math
import re

import pytest
import torch

from selfsup.augment import (
    ViewAugment,
    color_jitter,
    gaussian_blur,
    horizontal_flip,
    light_augment,
    random_grayscale,
    random_quarter_turns,
    random_resized_crop,
    random_translate,
    simclr_augment,
    solarize,
    views_from,
)
from selfsup.errors import SelfSupError

OPS = {
    "crop": lambda x, g: random_resized_crop(x, x.shape[-1], generator=g),
    "flip": lambda x, g: horizontal_flip(x, generator=g),
    "jitter": lambda x, g: color_jitter(x, generator=g),
    "gray": lambda x, g: random_grayscale(x, p=0.5, generator=g),
    "blur": lambda x, g: gaussian_blur(x, generator=g),
    "solarize": lambda x, g: solarize(x, p=0.5, generator=g),
    "view": lambda x, g: ViewAugment(blur_p=0.5, solarize_p=0.2)(x, generator=g),
    "light": lambda x, g: light_augment(x, generator=g),
}
# Ops whose random choice can be seen on a constant-per-image gray batch as well.
PROBABILISTIC = {
    "flip": lambda x, p: horizontal_flip(x, p=p),
    "jitter": lambda x, p: color_jitter(x, p=p),
    "gray": lambda x, p: random_grayscale(x, p=p),
    "blur": lambda x, p: gaussian_blur(x, sigma=(1.0, 2.0), p=p),
    "solarize": lambda x, p: solarize(x, threshold=0.0, p=p),
}


def images(batch: int = 16, channels: int = 3, size: int = 28, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_dtype_range_and_seeding(name: str, channels: int) -> None:
    x = images(channels=channels)
    op = OPS[name]
    out = op(x, seeded(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, op(x, seeded(1)))
    if not (name == "gray" and channels == 1):
        assert not torch.equal(out, op(x, seeded(2)))
    assert torch.equal(x, images(channels=channels)), "input must not be modified"


@pytest.mark.parametrize("name", sorted(PROBABILISTIC))
def test_p0_is_identity_and_p1_always_applies(name: str) -> None:
    torch.manual_seed(0)
    x = images(batch=32)
    op = PROBABILISTIC[name]
    assert torch.equal(op(x, 0.0), x)
    changed = (op(x, 1.0) - x).flatten(1).abs().amax(dim=1) > 1e-4
    assert changed.all()


def test_crop_area_and_ratio_within_bounds() -> None:
    # Crop an image whose pixel value is its x (resp. y) coordinate: the output's extreme values
    # give the box, so the box's area fraction and aspect ratio can be checked.
    size, batch = 64, 256
    coords = (torch.arange(size) + 0.5) / size
    x = torch.stack([coords.expand(size, size), coords[:, None].expand(size, size)])
    out = random_resized_crop(
        x.expand(batch, 2, size, size), 16, scale=(0.25, 0.5), ratio=(0.5, 2.0), generator=seeded(0)
    )
    assert out.shape == (batch, 2, 16, 16)
    pixel = 1 / 16  # the outer output pixels sit half a pixel inside the box
    width = (out[:, 0].amax(dim=(1, 2)) - out[:, 0].amin(dim=(1, 2))) * 16 / 15
    height = (out[:, 1].amax(dim=(1, 2)) - out[:, 1].amin(dim=(1, 2))) * 16 / 15
    area = width * height
    assert area.min() > 0.25 - pixel and area.max() < 0.5 + pixel
    assert (width / height).min() > 0.5 - 0.1 and (width / height).max() < 2.0 + 0.1
    assert area.std() > 0.03, "every sample must get its own box"


def test_crop_non_square_output_and_full_box_is_identity() -> None:
    x = images(batch=4, size=20)
    assert random_resized_crop(x, (12, 16)).shape == (4, 3, 12, 16)
    # scale 1 and ratio 1 leave only the whole image.
    whole = random_resized_crop(x, 20, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.allclose(whole, x, atol=1e-5)
    with pytest.raises(SelfSupError, match="scale"):
        random_resized_crop(x, 20, scale=(0.0, 1.0))


def test_flip_is_exact_and_per_sample() -> None:
    x = images(batch=64)
    out = horizontal_flip(x, generator=seeded(0))
    flipped = (out == x.flip(-1)).flatten(1).all(dim=1)
    kept = (out == x).flatten(1).all(dim=1)
    assert (flipped ^ kept).all()
    assert 10 < int(flipped.sum()) < 54


def test_translate_moves_each_image_by_at_most_max_shift_pixels() -> None:
    # One bright pixel per image, away from the border: it must land exactly |dy|, |dx| <= 3
    # away, every offset in range must occur, and nothing else may light up.
    x = torch.zeros(400, 1, 16, 16)
    x[:, 0, 8, 7] = 1.0
    out = random_translate(x, 3, generator=seeded(0))
    assert out.sum(dim=(1, 2, 3)).eq(1).all()
    where = torch.nonzero(out[:, 0])[:, 1:] - torch.tensor([8, 7])
    assert where.abs().max() <= 3
    offsets = {(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)}
    assert {tuple(w) for w in where.tolist()} == offsets
    assert torch.equal(random_translate(x, 0), x)
    with pytest.raises(SelfSupError, match="max_shift"):
        random_translate(x, -1)


def test_quarter_turns_turn_each_image_by_its_own_multiple_of_90_degrees() -> None:
    x = images(batch=200)
    out = random_quarter_turns(x, generator=seeded(0))
    turns = []
    for original, turned in zip(x, out, strict=True):
        matches = [k for k in range(4) if torch.equal(torch.rot90(original, k, (1, 2)), turned)]
        assert len(matches) == 1
        turns.append(matches[0])
    assert all(30 < turns.count(k) < 70 for k in range(4))
    with pytest.raises(SelfSupError, match="square"):
        random_quarter_turns(torch.rand(2, 1, 8, 6))


def test_jitter_parameters_differ_across_samples() -> None:
    # Identical images in, different images out: each sample got its own factors.
    x = images(batch=1).expand(16, -1, -1, -1)
    out = color_jitter(x, p=1.0, generator=seeded(0))
    assert (out[1:] - out[:1]).flatten(1).abs().amax(dim=1).min() > 1e-3


def test_jitter_on_one_channel_uses_only_brightness_and_contrast() -> None:
    x = images(batch=8, channels=1)
    only_colour = color_jitter(x, brightness=0, contrast=0, saturation=0.9, hue=0.5, p=1.0)
    assert torch.equal(only_colour, x)


def test_hue_rotation_keeps_gray_pixels_gray() -> None:
    gray = images(batch=8, channels=1).expand(8, 3, 28, 28)
    out = color_jitter(gray, brightness=0, contrast=0, saturation=0, hue=0.5, p=1.0)
    assert torch.allclose(out, gray, atol=1e-5)


def test_grayscale_output_has_equal_channels() -> None:
    out = random_grayscale(images(batch=8), p=1.0)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    one = images(batch=8, channels=1)
    assert torch.equal(random_grayscale(one, p=1.0), one)


def test_solarize_inverts_above_threshold_only() -> None:
    x = images(batch=8)
    out = solarize(x, threshold=0.6, p=1.0)
    above = x >= 0.6
    assert torch.equal(out[above], 1 - x[above]) and torch.equal(out[~above], x[~above])


def test_blur_sigma_differs_per_sample_and_keeps_constant_images() -> None:
    flat = torch.full((4, 3, 16, 16), 0.3)
    assert torch.allclose(gaussian_blur(flat, p=1.0), flat, atol=1e-6)
    x = images(batch=1).expand(16, -1, -1, -1)
    out = gaussian_blur(x, sigma=(0.1, 3.0), kernel_size=7, p=1.0, generator=seeded(0))
    smoothness = (out[..., 1:] - out[..., :-1]).abs().mean(dim=(1, 2, 3))
    assert smoothness.max() > 1.5 * smoothness.min()
    with pytest.raises(SelfSupError, match="kernel_size"):
        gaussian_blur(x, kernel_size=4)


def test_rejects_integer_images() -> None:
    with pytest.raises(SelfSupError, match="float images"):
        horizontal_flip(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))


def test_cpu_generator_drives_other_dtypes() -> None:
    x = images(batch=4).double()
    out = ViewAugment(blur_p=1.0)(x, generator=seeded(0))
    assert out.dtype == torch.float64 and out.shape == x.shape


def test_simclr_defaults_fit_the_image() -> None:
    small_gray = simclr_augment(28, 1)
    assert small_gray.crop_scale[0] >= 0.15 and small_gray.blur_p == 0.0
    assert simclr_augment(32, 3).blur_p == 0.0
    assert simclr_augment(96, 3).blur_p == 0.5
    view = small_gray(images(batch=8, channels=1), generator=seeded(0))
    assert view.shape == (8, 1, 28, 28)


def test_view_is_different_per_call_without_generator() -> None:
    torch.manual_seed(0)
    x = images(batch=8)
    augment = simclr_augment(28, 3)
    assert not torch.equal(augment(x), augment(x))
    assert math.isfinite(float(augment(x).sum()))


def test_views_from_changes_only_the_given_fields_of_the_default() -> None:
    default = simclr_augment(28, 1)
    assert views_from(None, default) is default
    changed = views_from({"crop_scale": [0.08, 1.0], "gray_p": 0}, default)
    assert changed.crop_scale == (0.08, 1.0) and changed.gray_p == 0
    assert changed.jitter_strength == default.jitter_strength and changed.blur_p == default.blur_p
    assert default.crop_scale == (0.2, 1.0)  # the default itself is untouched
    given = ViewAugment(flip_p=0.0)
    assert views_from(given, default) is given


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"crop_scal": [0.1, 1.0]}, "unknown field(s) crop_scal; valid: crop_scale"),
        ({"crop_scale": [0.5, 0.2]}, "crop_scale needs 0 < low <= high <= 1"),
        ({"crop_scale": 0.5}, "crop_scale must be two numbers"),
        ({"gray_p": 2}, "gray_p is a probability in [0, 1]"),
        ({"jitter_strength": -1}, "jitter_strength must be a number >= 0"),
        ({"flip_p": "half"}, "flip_p is a probability in [0, 1], got 'half'"),
        (False, "augment: expected fields of the views"),
    ],
)
def test_views_from_rejects_bad_fields_by_name(fields: object, message: str) -> None:
    with pytest.raises(SelfSupError, match=re.escape(message)):
        views_from(fields, simclr_augment(28, 1))
