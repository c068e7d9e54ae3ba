"""ResNet-18/50 (He et al. 2016) with a CIFAR stem (3x3 conv, no max-pool) or ImageNet stem."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.errors import SelfSupError


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = _shortcut(in_channels, channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        return torch.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
    )


ARCHITECTURES: dict[str, tuple[type[nn.Module], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


class ResNet(nn.Module):
    """ResNet returning globally average-pooled features.

    stem="cifar" keeps full resolution for small images (3x3 conv, no max-pool), as in SimCLR's
    CIFAR experiments; "imagenet" is the original 7x7/2 conv + max-pool. `width` scales every
    layer's channel count (64 * width in the first stage).
    """

    def __init__(
        self,
        name: str = "resnet18",
        in_channels: int = 3,
        image_size: int = 32,
        stem: str | None = None,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        stem = stem or ("cifar" if image_size <= 64 else "imagenet")
        if stem not in ("cifar", "imagenet"):
            raise SelfSupError(f"unknown ResNet stem {stem!r}; choose 'cifar' or 'imagenet'")
        if width <= 0:
            raise SelfSupError(f"ResNet width must be positive, got {width}")
        block, counts = ARCHITECTURES[name]
        base = max(1, round(64 * width))
        if stem == "cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, base, 3, 1, 1, bias=False),
                nn.BatchNorm2d(base),
                nn.ReLU(inplace=True),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, base, 7, 2, 3, bias=False),
                nn.BatchNorm2d(base),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        layers = []
        previous = base
        for index, count in enumerate(counts):
            channels = base * 2**index
            blocks = []
            for position in range(count):
                stride = 2 if index > 0 and position == 0 else 1
                blocks.append(block(previous, channels, stride))
                previous = channels * block.expansion
            layers.append(nn.Sequential(*blocks))
        self.layers = nn.ModuleList(layers)
        self.feature_dim = previous
        self.config = {
            "name": name,
            "in_channels": in_channels,
            "image_size": image_size,
            "stem": stem,
            "width": width,
        }

    def stages(self) -> list[nn.Module]:
        """Stem, then the 4 residual stages."""
        return [self.stem, *self.layers]

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        for stage in self.stages():
            x = stage(x)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(images).mean(dim=(2, 3))
