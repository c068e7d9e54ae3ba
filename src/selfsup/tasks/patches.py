"""3x3 patch grids shared by the relative-patch and jigsaw tasks.

A grid is 9 patches of `patch` px whose cells are `stride` px apart (row-major, cell 4 is the
centre). Each patch moves by its own random jitter inside its cell and the whole grid by a
random offset inside the image, so absolute positions carry no label. Patches are gathered and
pasted with one advanced-indexing call for the whole batch: no Python loop over samples.

The guards against low-level shortcuts (Doersch et al. 2015, section 3.1) live here too:
chromatic aberration handling and random down- then up-sampling.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.augment import random_grayscale
from selfsup.errors import SelfSupError

CHROMATIC_MODES = ("auto", "none", "project", "drop", "gray")
# Chromatic aberration shifts green against magenta (red + blue); Doersch et al. project
# every pixel onto the plane orthogonal to this axis.
_GREEN_MAGENTA = (-1 / math.sqrt(6), 2 / math.sqrt(6), -1 / math.sqrt(6))
# Smallest input that keeps a spatial map after small_cnn's three 2x2 pools / ResNet's strides.
MIN_ENCODER_INPUT = 16


def check_grid(
    image_size: int, patch: int, stride: int, jitter: tuple[int, int], what: str
) -> None:
    """Raise a one-line error unless the jittered 3x3 grid fits in the image."""
    extent = 2 * stride + patch + (jitter[1] - jitter[0])
    if patch < 1 or stride < patch or extent > image_size:
        raise SelfSupError(
            f"{what}: a 3x3 grid of {patch} px patches, {stride} px apart, with jitter "
            f"{jitter[0]}..{jitter[1]} px needs {extent} px but the images are {image_size} px; "
            "lower patch_size, gap or jitter (or raise --image-size)"
        )


def grid_corners(
    batch: int,
    image_size: int,
    patch: int,
    stride: int,
    jitter: tuple[int, int],
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Top-left (row, col) of the 9 patches of a random grid per image: int64 (B, 9, 2).

    Cell (r, c) starts at origin + (r, c) * stride, its patch at that plus a jitter drawn
    uniformly from jitter[0]..jitter[1] per axis; the origin is uniform over every position
    that keeps all patches inside the image.
    """
    low, high = jitter
    first, last = -low, image_size - (2 * stride + patch) - high

    def draw(low_: int, high_: int, shape: tuple[int, ...]) -> torch.Tensor:
        gen_device = generator.device if generator is not None else device
        values = torch.randint(low_, high_ + 1, shape, generator=generator, device=gen_device)
        return values.to(device)

    origin = draw(first, last, (batch, 1, 2))
    cells = torch.arange(3, device=device) * stride
    cell_corner = torch.stack(torch.meshgrid(cells, cells, indexing="ij"), dim=-1).view(1, 9, 2)
    return origin + cell_corner + draw(low, high, (batch, 9, 2))


def _pixel_index(corners: torch.Tensor, patch: int) -> tuple[torch.Tensor, ...]:
    """Broadcastable (sample, row, col) indices of every pixel of every patch."""
    offsets = torch.arange(patch, device=corners.device)
    rows = (corners[..., 0, None] + offsets)[..., :, None]  # (B, K, p, 1)
    cols = (corners[..., 1, None] + offsets)[..., None, :]  # (B, K, 1, p)
    sample = torch.arange(corners.shape[0], device=corners.device).view(-1, 1, 1, 1)
    return sample, rows, cols


def gather_patches(images: torch.Tensor, corners: torch.Tensor, patch: int) -> torch.Tensor:
    """The patches of (B, C, H, W) images at top-left `corners` (B, K, 2): (B, K, C, p, p)."""
    sample, rows, cols = _pixel_index(corners, patch)
    # Advanced indices split by the channel slice put the indexed dims first: (B, K, p, p, C).
    return images[sample, :, rows, cols].permute(0, 1, 4, 2, 3)


def paste_patches(canvas: torch.Tensor, patches: torch.Tensor, corners: torch.Tensor) -> None:
    """Write (B, K, C, p, p) patches into (B, C, H, W) `canvas` in place at `corners`."""
    sample, rows, cols = _pixel_index(corners, patches.shape[-1])
    canvas[sample, :, rows, cols] = patches.permute(0, 1, 3, 4, 2)


def remove_chromatic_aberration(
    patches: torch.Tensor, mode: str, p: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Hide the colour fringes that betray where a patch sat in the lens (N, C, h, w patches).

    "project" (Doersch et al.): remove each pixel's green-magenta component, keeping lightness
    and the blue-yellow axis. "drop" (Doersch et al.'s colour dropping): keep one random channel,
    replace the other two by Gaussian noise with 1/100 of its standard deviation around its mean.
    "gray": luma copied to all channels. Each patch is treated with probability p; 1-channel
    patches and mode "none" come back unchanged.
    """
    if mode not in CHROMATIC_MODES or mode == "auto":
        raise SelfSupError(
            f"unknown chromatic mode {mode!r}; choose one of: none, project, drop, gray"
        )
    if mode == "none" or patches.shape[1] != 3 or p <= 0:
        return patches
    n = patches.shape[0]
    gen_device = generator.device if generator is not None else patches.device
    apply = (torch.rand(n, generator=generator, device=gen_device) < p).to(patches.device)
    apply = apply.view(n, 1, 1, 1)
    if mode == "gray":
        return random_grayscale(patches, p=1.0, generator=generator).where(apply, patches)
    if mode == "project":
        axis = patches.new_tensor(_GREEN_MAGENTA).view(1, 3, 1, 1)
        projected = patches - axis * (patches * axis).sum(dim=1, keepdim=True)
        return projected.clamp(0, 1).where(apply, patches)
    keep = torch.randint(0, 3, (n,), generator=generator, device=gen_device).to(patches.device)
    kept = patches[torch.arange(n, device=patches.device), keep][:, None]  # (N, 1, h, w)
    mean = kept.mean(dim=(2, 3), keepdim=True)
    std = kept.std(dim=(2, 3), keepdim=True)
    noise = torch.randn(patches.shape, generator=generator, device=gen_device).to(patches)
    dropped = (mean + 0.01 * std * noise).clamp(0, 1)
    is_kept = torch.arange(3, device=patches.device).view(1, 3, 1, 1) == keep.view(n, 1, 1, 1)
    return torch.where(is_kept, patches, dropped).where(apply, patches)


def random_downsample(
    patches: torch.Tensor,
    p: float,
    min_scale: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """With probability p per patch, shrink it to a side drawn from min_scale..1 of its own
    (area-averaged) and blow it back up (bilinear), so the encoder cannot rely on fine detail.

    Patches are grouped by the drawn side: the loop runs over a handful of sizes, not samples.
    """
    n, _, height, width = patches.shape
    if p <= 0 or n == 0:
        return patches
    gen_device = generator.device if generator is not None else patches.device
    apply = torch.rand(n, generator=generator, device=gen_device) < p
    smallest = max(1, math.ceil(min_scale * height))
    sides = torch.randint(smallest, height, (n,), generator=generator, device=gen_device)
    sides = torch.where(apply, sides, torch.full_like(sides, height)).cpu()
    out = patches.clone()
    for side in sides.unique().tolist():
        if side == height:
            continue
        chosen = (sides == side).nonzero().squeeze(1).to(patches.device)
        small_width = max(1, round(side * width / height))
        small = F.interpolate(patches[chosen], size=(side, small_width), mode="area")
        big = F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)
        out[chosen] = big
    return out


def encoder_input_size(backbone: nn.Module, image_size: int, patch: int) -> int:
    """The side patches are resized to before the shared encoder sees them.

    A ViT only takes the size it was built for (its position embeddings); convolutional
    backbones take any size, but 7-8 px patches would pool away to nothing, so they get at
    least MIN_ENCODER_INPUT px.
    """
    name = str(getattr(backbone, "config", {}).get("name", ""))
    if name.startswith("vit"):
        return image_size
    return max(patch, MIN_ENCODER_INPUT)


def resize_patches(patches: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, p, p) -> (N, C, size, size), bilinear; a no-op at the same size."""
    if patches.shape[-1] == size and patches.shape[-2] == size:
        return patches
    return F.interpolate(patches, size=(size, size), mode="bilinear", align_corners=False)


def resolve_chromatic(mode: str, channels: int) -> str:
    """ "auto": "project" on colour images, "none" on gray ones."""
    if mode not in CHROMATIC_MODES:
        raise SelfSupError(
            f"unknown chromatic mode {mode!r}; choose one of: {', '.join(CHROMATIC_MODES)}"
        )
    if mode == "auto":
        return "project" if channels == 3 else "none"
    return mode
