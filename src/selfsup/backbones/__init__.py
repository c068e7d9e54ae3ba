"""Backbones. Image ones: float (B, C, H, W) in [0, 1] -> pooled features (B, feature_dim);
text ones (transformer, word_vectors): int64 tokens (B, T) -> states (B, T, dim), with
`features(tokens)` -> (B, dim).

Every backbone has `feature_dim`, a JSON-serialisable `config` such that
`build_backbone(**config)` rebuilds the same architecture, and `stages()` (input to output,
stem first) so a fine-tuner can freeze the first K.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from selfsup.backbones.export import load_backbone, save_backbone
from selfsup.backbones.resnet import ResNet
from selfsup.backbones.small_cnn import SmallCNN
from selfsup.backbones.transformer import TextTransformer
from selfsup.backbones.vit import ViT
from selfsup.backbones.word_vectors import WordVectors
from selfsup.errors import SelfSupError

BACKBONES: dict[str, str] = {
    "small_cnn": "4-stage conv3x3-BN-ReLU CNN with max-pools, 256-d features; fast on CPU",
    "resnet18": "ResNet-18, 512-d features; CIFAR stem (3x3, no max-pool) for images <= 64 px",
    "resnet50": "ResNet-50 (bottleneck), 2048-d features; options: stem, width",
    "vit_tiny": "ViT-Tiny (192-d, 12 pre-norm blocks, 3 heads); options: patch_size, pool",
    "transformer": "text Transformer, encoder or causal decoder (pre-norm, SDPA); options: "
    "size (tiny, mini, small, base), dim, depth, heads, max_len, positions (learned, rotary)",
    "word_vectors": "word2vec input vectors; a text's feature is the mean of its tokens'",
}

_BUILDERS: dict[str, Any] = {
    "small_cnn": SmallCNN,
    "resnet18": lambda **kw: ResNet("resnet18", **kw),
    "resnet50": lambda **kw: ResNet("resnet50", **kw),
    "vit_tiny": ViT,
    "transformer": TextTransformer,
    "word_vectors": WordVectors,
}
_OPTIONS: dict[str, list[str]] = {
    "small_cnn": ["width", "depth"],
    "resnet18": ["stem", "width"],
    "resnet50": ["stem", "width"],
    "vit_tiny": ["patch_size", "dim", "depth", "heads", "mlp_ratio", "pool"],
    # vocab_size, causal, segments and langs come from the tokenizer and the task, not the user.
    "transformer": [
        *("size", "dim", "depth", "heads", "mlp_ratio", "max_len", "dropout", "positions"),
        *("vocab_size", "causal", "segments", "langs"),
    ],
    "word_vectors": ["dim", "vocab_size"],
}
TEXT_BACKBONES = ("transformer", "word_vectors")
IMAGE_BACKBONES = tuple(name for name in BACKBONES if name not in TEXT_BACKBONES)


def build_backbone(
    name: str, in_channels: int = 3, image_size: int = 32, **options: Any
) -> nn.Module:
    """Build a backbone by name for images of `in_channels` x `image_size` x `image_size`."""
    if name not in BACKBONES:
        raise SelfSupError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    unknown = sorted(set(options) - set(_OPTIONS[name]))
    if unknown:
        raise SelfSupError(
            f"unknown option(s) {', '.join(unknown)} for backbone {name!r}; "
            f"it takes: {', '.join(_OPTIONS[name])}"
        )
    return _BUILDERS[name](in_channels=in_channels, image_size=image_size, **options)


def feature_map(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """An image backbone's feature map (B, C, h, w) before pooling; ViT tokens on their grid."""
    features = backbone.forward_features(images)
    if features.dim() == 3:
        tokens = features
        side = math.isqrt(tokens.shape[1])
        if side * side != tokens.shape[1]:
            tokens = tokens[:, 1:]  # a class token
            side = math.isqrt(tokens.shape[1])
        # Contiguous, as a CNN's map is: the video tasks .view() it (future_frame, dpc).
        features = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side).contiguous()
    return features


__all__ = [
    "BACKBONES",
    "IMAGE_BACKBONES",
    "TEXT_BACKBONES",
    "build_backbone",
    "feature_map",
    "load_backbone",
    "save_backbone",
]
