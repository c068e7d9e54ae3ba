"""Batched image augmentations: one call transforms a whole batch on the batch's device.

Every op takes float images (B, C, H, W) in [0, 1], draws independent parameters per sample
from `generator` (None = torch's global RNG) and keeps dtype and range. Random numbers are
drawn on the generator's device and moved to the images, so a CPU generator can drive a CUDA
batch and a fixed seed gives the same result whatever the batch's device. There are no Python
loops over the batch and no host round-trips: per-sample choices are masks fed to torch.where.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from selfsup.color import LUMA
from selfsup.errors import SelfSupError

# RGB -> YIQ; a hue shift is a rotation of the (I, Q) chroma plane.
_RGB_TO_YIQ = (
    LUMA,
    (0.595716, -0.274453, -0.321263),
    (0.211456, -0.522591, 0.311135),
)


def _check(images: torch.Tensor) -> None:
    if images.ndim != 4 or not images.is_floating_point():
        raise SelfSupError(
            f"augmentations need float images (B, C, H, W) in [0, 1], got "
            f"{images.dtype} {tuple(images.shape)}; convert with images.float() / 255"
        )


def _uniform(
    n: int, low: float, high: float, images: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """n float32 draws from U(low, high) on the images' device."""
    if generator is None:
        u = torch.rand(n, device=images.device)
    else:
        u = torch.rand(n, generator=generator, device=generator.device).to(images.device)
    return low + (high - low) * u


def _coin(
    n: int, p: float, images: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Boolean (n, 1, 1, 1) mask, True with probability p per sample."""
    return (_uniform(n, 0.0, 1.0, images, generator) < p).view(n, 1, 1, 1)


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _luma(images: torch.Tensor) -> torch.Tensor:
    """Grayscale (B, 1, H, W); a 1-channel image is its own luma."""
    if images.shape[1] != 3:
        return images.mean(dim=1, keepdim=True)
    weights = images.new_tensor(LUMA).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def random_resized_crop(
    images: torch.Tensor,
    size: int | tuple[int, int],
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Crop a random box per sample and resize it to `size` (bilinear), as in Inception/SimCLR.

    The box covers a fraction of the image area drawn uniformly from `scale`, with a
    log-uniform aspect ratio (width / height) from `ratio`. Instead of torchvision's
    rejection loop, the ratio range is narrowed per sample to the ratios whose box fits in the
    image, so the area fraction is always exactly the drawn one and no loop is needed. All
    boxes are sampled with a single batched grid_sample call.
    """
    _check(images)
    if not (0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1]):
        raise SelfSupError(
            f"crop needs 0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1], "
            f"got scale={tuple(scale)} ratio={tuple(ratio)}"
        )
    b, _, height, width = images.shape
    out_h, out_w = _pair(size)
    area = _uniform(b, scale[0], scale[1], images, generator)
    # Box fits iff w/W <= 1 and h/H <= 1, i.e. area*W/H <= r <= W/(area*H).
    fit_low = torch.log(area * width / height)
    fit_high = torch.log(width / (area * height))
    low = torch.clamp(torch.full_like(area, math.log(ratio[0])), fit_low, fit_high)
    high = torch.clamp(torch.full_like(area, math.log(ratio[1])), fit_low, fit_high)
    log_r = low + (high - low) * _uniform(b, 0.0, 1.0, images, generator)
    r = torch.exp(log_r)
    # Box half-extents and centres in grid_sample's [-1, 1] coordinates.
    frac_w = torch.sqrt(area * r * height / width).clamp(max=1.0)
    frac_h = torch.sqrt(area * width / (r * height)).clamp(max=1.0)
    center_x = (1 - frac_w) * _uniform(b, -1.0, 1.0, images, generator)
    center_y = (1 - frac_h) * _uniform(b, -1.0, 1.0, images, generator)

    # The sampling grid affine_grid would make for these axis-aligned boxes, built directly:
    # x depends only on the column and y only on the row (8x faster than affine_grid on CPU).
    def axis(n: int, center: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
        pixel_centres = torch.arange(n, device=images.device) * (2 / n) + (1 / n - 1)
        return (center[:, None] + frac[:, None] * pixel_centres).to(images.dtype)

    grid_x = axis(out_w, center_x, frac_w).view(b, 1, out_w).expand(b, out_h, out_w)
    grid_y = axis(out_h, center_y, frac_h).view(b, out_h, 1).expand(b, out_h, out_w)
    grid = torch.stack([grid_x, grid_y], dim=-1)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.clamp_(0.0, 1.0)


def horizontal_flip(
    images: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Mirror each image left-right with probability p."""
    _check(images)
    mask = _coin(images.shape[0], p, images, generator)
    return torch.where(mask, images.flip(-1), images)


def random_translate(
    images: torch.Tensor, max_shift: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Shift each image by a whole number of pixels, drawn uniformly from [-max_shift,
    max_shift] in x and in y independently; the uncovered border is 0 (black)."""
    _check(images)
    if max_shift < 0:
        raise SelfSupError(f"random_translate needs max_shift >= 0, got {max_shift}")
    if max_shift == 0:
        return images
    b, _, height, width = images.shape
    draws = _uniform(2 * b, 0.0, 1.0, images, generator).view(b, 2)
    shifts = (draws * (2 * max_shift + 1)).long().clamp_(max=2 * max_shift) - max_shift
    padded = F.pad(images, (max_shift,) * 4)
    # Output pixel (y, x) reads padded pixel (y + max_shift - dy, x + max_shift - dx).
    rows = torch.arange(height, device=images.device) + max_shift - shifts[:, 1:]  # (B, H)
    cols = torch.arange(width, device=images.device) + max_shift - shifts[:, :1]  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    # Advanced indices around a slice put their dimensions first: (B, H, W, C).
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def random_quarter_turns(
    images: torch.Tensor, p: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """With probability p, turn each square image by its own random multiple of 90 degrees
    (0, 90, 180 or 270)."""
    _check(images)
    if images.shape[-1] != images.shape[-2]:
        raise SelfSupError(
            f"random_quarter_turns needs square images, got {images.shape[-2]}x{images.shape[-1]}"
        )
    draws = _uniform(images.shape[0], 0.0, 1.0, images, generator)
    turns = (draws * 4).long().clamp_(max=3)
    if p < 1.0:
        turns[~_coin(images.shape[0], p, images, generator).flatten()] = 0
    out = images.clone()
    for k in range(1, 4):
        chosen = turns == k
        out[chosen] = torch.rot90(images[chosen], k, dims=(2, 3))
    return out


def color_jitter(
    images: torch.Tensor,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.1,
    p: float = 0.8,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random brightness, contrast, saturation and hue per sample, applied with probability p.

    Factors are drawn as in torchvision's ColorJitter (brightness/contrast/saturation from
    U(1 - s, 1 + s), hue shift from U(-hue, hue) of a full turn) and applied in a fixed order:
    brightness, contrast, then saturation and hue together, clamping to [0, 1] after each.
    Saturation and hue are one 3x3 colour matrix per sample: in YIQ space saturation scales the
    chroma plane (I, Q) and a hue shift rotates it. This skips the clamp torchvision makes
    between the two, and a YIQ rotation is close to, not equal to, an HSV hue shift; in return
    the whole jitter is a few passes over the batch. They do nothing on 1-channel images.
    Samples that are not jittered get identity factors, so they come back bit-exact.
    """
    _check(images)
    b, channels = images.shape[:2]
    apply = _uniform(b, 0.0, 1.0, images, generator) < p

    def factor(low: float, high: float, identity: float) -> torch.Tensor:
        value = _uniform(b, low, high, images, generator)
        return torch.where(apply, value, torch.full_like(value, identity))

    # Draw every factor up front so the random stream does not depend on the channel count.
    bright = factor(max(0.0, 1 - brightness), 1 + brightness, 1.0)
    contr = factor(max(0.0, 1 - contrast), 1 + contrast, 1.0)
    satur = factor(max(0.0, 1 - saturation), 1 + saturation, 1.0)
    shift = factor(-hue, hue, 0.0)
    view = (b, 1, 1, 1)

    # In-place ops on one fresh buffer: allocating full-batch tensors dominates on CPU.
    out = images * bright.to(images.dtype).view(view)
    out.clamp_(0, 1)
    if contrast > 0:
        # Blend with the mean gray level, as torchvision does: x * c + mean * (1 - c).
        mean = _luma(out.mean(dim=(2, 3), keepdim=True))
        out.mul_(contr.to(out.dtype).view(view)).add_(mean * (1 - contr).to(out.dtype).view(view))
        out.clamp_(0, 1)
    if channels == 3 and (saturation > 0 or hue > 0):
        matrix = _chroma_matrix(satur, shift)
        matrix = torch.where(apply.view(b, 1, 1), matrix, torch.eye(3, device=matrix.device))
        out = torch.bmm(matrix.to(out.dtype), out.reshape(b, 3, -1)).view(images.shape)
        out.clamp_(0, 1)
    return out


def _chroma_matrix(saturation: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Per-sample RGB 3x3 matrices: scale YIQ chroma by `saturation`, rotate it `shift` turns."""
    to_yiq = torch.tensor(_RGB_TO_YIQ, device=shift.device)
    angle = shift * (2 * math.pi)
    cos, sin = torch.cos(angle) * saturation, torch.sin(angle) * saturation
    chroma = torch.zeros(shift.shape[0], 3, 3, device=shift.device)
    chroma[:, 0, 0] = 1
    chroma[:, 1, 1] = cos
    chroma[:, 1, 2] = -sin
    chroma[:, 2, 1] = sin
    chroma[:, 2, 2] = cos
    return torch.linalg.inv(to_yiq) @ chroma @ to_yiq


def random_grayscale(
    images: torch.Tensor, p: float = 0.2, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Replace each RGB image by its luma (copied to all channels) with probability p.

    1-channel images are already gray: they are returned unchanged (the coin is still tossed,
    so the random stream is the same for any channel count).
    """
    _check(images)
    mask = _coin(images.shape[0], p, images, generator)
    if images.shape[1] == 1:
        return images
    return torch.where(mask, _luma(images).expand_as(images), images)


def default_blur_kernel(height: int, width: int) -> int:
    """SimCLR's kernel: about 10% of the image side, odd, at least 3."""
    side = max(3, int(0.1 * min(height, width)))
    return side if side % 2 == 1 else side + 1


def gaussian_blur(
    images: torch.Tensor,
    sigma: tuple[float, float] = (0.1, 2.0),
    kernel_size: int | None = None,
    p: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gaussian blur with a per-sample sigma from U(sigma), applied with probability p.

    Separable: a horizontal then a vertical 1-D kernel, each one grouped convolution over all
    B * C planes at once, with reflect padding. kernel_size defaults to ~10% of the image side.
    """
    _check(images)
    b, c, h, w = images.shape
    k = kernel_size or default_blur_kernel(h, w)
    if k % 2 == 0 or k < 1 or k // 2 >= min(h, w):
        raise SelfSupError(
            f"blur kernel_size must be odd and smaller than the image ({h}x{w}), got {k}"
        )
    apply = _coin(b, p, images, generator)
    sigmas = _uniform(b, sigma[0], sigma[1], images, generator).clamp(min=1e-3)
    offsets = torch.arange(k, device=images.device, dtype=torch.float32) - k // 2
    kernels = torch.exp(-(offsets**2) / (2 * sigmas[:, None] ** 2))
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).to(images.dtype)
    # One kernel per (sample, channel) plane.
    weight = kernels.repeat_interleave(c, dim=0)  # (B*C, k)
    planes = images.reshape(1, b * c, h, w)
    pad = k // 2
    out = F.conv2d(
        F.pad(planes, (pad, pad, 0, 0), mode="reflect"), weight.view(b * c, 1, 1, k), groups=b * c
    )
    out = F.conv2d(
        F.pad(out, (0, 0, pad, pad), mode="reflect"), weight.view(b * c, 1, k, 1), groups=b * c
    )
    return torch.where(apply, out.view(b, c, h, w).clamp(0, 1), images)


def solarize(
    images: torch.Tensor,
    threshold: float = 0.5,
    p: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Invert pixels >= threshold (x -> 1 - x) with probability p per image (BYOL's view 2)."""
    _check(images)
    mask = _coin(images.shape[0], p, images, generator)
    return torch.where(mask & (images >= threshold), 1 - images, images)
