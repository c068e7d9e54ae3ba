"""A small Vision Transformer (Dosovitskiy et al. 2021) with pre-norm blocks and SDPA."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.errors import SelfSupError


def default_patch_size(image_size: int) -> int:
    """The divisor of image_size closest to 4 px (small images) or 16 px (large ones).

    4 px gives a 7x7 or 8x8 grid on 28-32 px images; ties go to the larger patch (fewer tokens).
    """
    target = 4 if image_size <= 64 else 16
    divisors = [d for d in range(1, image_size + 1) if image_size % d == 0]
    return min(divisors, key=lambda d: (abs(d - target), -d))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Images in [0, 1] -> tokens with position embeddings (and a class token if asked)."""

    def __init__(self, in_channels: int, image_size: int, patch: int, dim: int, cls: bool):
        super().__init__()
        self.image_size = image_size
        self.proj = nn.Conv2d(in_channels, dim, patch, patch)
        tokens = (image_size // patch) ** 2 + int(cls)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim)) if cls else None
        self.pos = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise SelfSupError(
                f"this ViT was built for {self.image_size}x{self.image_size} images, got "
                f"{tuple(images.shape[-2:])}; build it with image_size={images.shape[-1]}"
            )
        # Centre the inputs: the patch projection has no normalisation in front of it.
        x = self.proj(images * 2 - 1).flatten(2).transpose(1, 2)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.pos


class ViT(nn.Module):
    """ViT-Tiny by default (dim 192, depth 12, 3 heads); forward returns pooled features."""

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        patch_size: int | None = None,
        dim: int = 192,
        depth: int = 12,
        heads: int = 3,
        mlp_ratio: float = 4.0,
        pool: str = "mean",
    ) -> None:
        super().__init__()
        patch_size = patch_size or default_patch_size(image_size)
        if image_size % patch_size:
            raise SelfSupError(
                f"patch_size {patch_size} does not divide image_size {image_size}; pick a divisor"
            )
        if pool not in ("mean", "cls"):
            raise SelfSupError(f"unknown ViT pool {pool!r}; choose 'mean' or 'cls'")
        if dim % heads:
            raise SelfSupError(f"ViT dim {dim} must be divisible by heads {heads}")
        self.pool = pool
        self.embed = PatchEmbed(in_channels, image_size, patch_size, dim, cls=pool == "cls")
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.feature_dim = dim
        self.config = {
            "name": "vit_tiny",
            "in_channels": in_channels,
            "image_size": image_size,
            "patch_size": patch_size,
            "dim": dim,
            "depth": depth,
            "heads": heads,
            "mlp_ratio": mlp_ratio,
            "pool": pool,
        }

    def stages(self) -> list[nn.Module]:
        """Patch embedding, each block, then the final norm."""
        return [self.embed, *self.blocks, self.norm]

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        for stage in self.stages():
            x = stage(x)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.forward_features(images)
        return tokens[:, 0] if self.pool == "cls" else tokens.mean(dim=1)
