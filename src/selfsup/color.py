"""Batched sRGB <-> CIE Lab (D65) conversion as plain tensor ops, on the batch's own device.

sRGB values are in [0, 1] with the standard piecewise gamma; L is in [0, 100], a and b roughly in
[-110, 110]. Images are (..., 3, H, W) with the colour channels third from last.
"""

from __future__ import annotations

from functools import lru_cache

import torch

# ITU-R BT.601 luma weights of R, G and B, as in PIL's and torchvision's grayscale conversion.
LUMA = (0.299, 0.587, 0.114)
# Linear sRGB -> XYZ for the D65 white (IEC 61966-2-1).
_RGB_TO_XYZ = (
    (0.4124564, 0.3575761, 0.1804375),
    (0.2126729, 0.7151522, 0.0721750),
    (0.0193339, 0.1191920, 0.9503041),
)
# CIE constants, exact fractions so the two branches of f meet without a step.
_EPSILON = 216 / 24389
_KAPPA = 24389 / 27


def _matrix(rows, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).to(like.device, torch.float32)


def _apply(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # Broadcast-and-sum rather than matmul: autocast leaves it in float32 under mixed precision,
    # where a bf16 matmul would cost ~1 Lab unit of error.
    return (matrix[:, :, None, None] * x.unsqueeze(-4)).sum(-3)


def _white(like: torch.Tensor) -> torch.Tensor:
    # The matrix's own image of RGB white, so pure white lands on a = b = 0 exactly.
    return _matrix(_RGB_TO_XYZ, like).sum(1)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB (..., 3, H, W) in [0, 1] -> Lab (..., 3, H, W), float32."""
    rgb = rgb.float()
    linear = torch.where(
        rgb <= 0.04045, rgb / 12.92, ((rgb.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4
    )
    xyz = _apply(_matrix(_RGB_TO_XYZ, rgb), linear) / _white(rgb)[:, None, None]
    f = torch.where(xyz > _EPSILON, xyz.clamp_min(_EPSILON) ** (1 / 3), (_KAPPA * xyz + 16) / 116)
    fx, fy, fz = f.unbind(-3)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-3)


def lab_to_rgb(lab: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """Lab (..., 3, H, W) -> sRGB (..., 3, H, W); clamp=False keeps out-of-gamut values."""
    lab = lab.float()
    lightness, a, b = lab.unbind(-3)
    fy = (lightness + 16) / 116
    f = torch.stack([fy + a / 500, fy, fy - b / 200], dim=-3)
    xyz = torch.where(f**3 > _EPSILON, f**3, (116 * f - 16) / _KAPPA)
    xyz = xyz * _white(lab)[:, None, None]
    inverse = torch.linalg.inv(torch.tensor(_RGB_TO_XYZ, dtype=torch.float64))
    linear = _apply(inverse.to(lab.device, torch.float32), xyz)
    rgb = torch.where(
        linear <= 0.0031308,
        12.92 * linear,
        1.055 * linear.clamp_min(0.0031308) ** (1 / 2.4) - 0.055,
    )
    return rgb.clamp(0, 1) if clamp else rgb


def gamut_ab_bins(grid: float = 10.0, samples: int = 64) -> torch.Tensor:
    """Centres (Q, 2) of the `grid`-sized ab cells that some sRGB colour falls into (CPU).

    Every colour of a `samples`^3 sRGB lattice is converted to Lab and rounded to the nearest
    cell centre (multiples of `grid`, as the paper's bins are). Grid 10 gives 261 bins: the
    paper's 313 also keep cells that only colours outside sRGB reach.
    """
    return _gamut_ab_bins(float(grid), samples).clone()


@lru_cache(maxsize=4)
def _gamut_ab_bins(grid: float, samples: int) -> torch.Tensor:
    # Cached: a 64^3 lattice takes about a second on a busy CPU and every task build needs it.
    axis = torch.linspace(0, 1, samples)
    cube = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij")).reshape(3, -1, 1)
    ab = rgb_to_lab(cube)[1:].reshape(2, -1).T
    return torch.unique(torch.round(ab / grid), dim=0) * grid
