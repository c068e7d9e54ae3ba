"""Image datasets as the engine and the evaluation see them.

Every source yields uint8 images in (C, H, W) layout and int64 labels, -1 meaning "no label".
In-memory sources (MNIST, CIFAR, digits) are `TensorImageDataset`s: the engine indexes a whole
batch at once instead of collating samples one by one, so the data path costs almost nothing.
Lazy sources (image folders) implement `__getitem__` and are read by DataLoader workers.
"""

from __future__ import annotations

import sys

import torch
from torch.utils.data import Dataset

from selfsup.color import LUMA

UNLABELED = -1

_NOTED: set[str] = set()


def note(message: str) -> None:
    """Print "note: MESSAGE" on stderr, once per process: a command loads a source more than
    once (its train split for the shapes, then both splits), and one note is enough."""
    if message not in _NOTED:
        _NOTED.add(message)
        print(f"note: {message}", file=sys.stderr, flush=True)


class ImageDataset(Dataset):
    """Base class: uint8 (C, H, W) images with int64 labels (-1 = unlabeled)."""

    name: str = "images"
    classes: list[str] | None = None

    @property
    def labels(self) -> torch.Tensor:
        """All labels as an int64 tensor of shape (N,); -1 where a sample has no label."""
        raise NotImplementedError

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) shared by every image."""
        raise NotImplementedError

    @property
    def has_labels(self) -> bool:
        return bool(len(self) > 0 and (self.labels >= 0).all())

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        raise NotImplementedError

    def get_batch(self, indices: torch.Tensor) -> torch.Tensor:
        """uint8 images (B, C, H, W) for these indices (slow generic path: one by one)."""
        return torch.stack([self[int(i)][0] for i in indices])

    def extras(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """More per-sample tensors for the training batch, e.g. another image of the same
        group (MICLe). uint8 tensors are turned into floats in [0, 1] like the images.
        Randomness must come from torch's global generator, which the engine seeds per step.
        Default: nothing."""
        return {}


class TensorImageDataset(ImageDataset):
    """An image dataset held in memory as one uint8 tensor."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        classes: list[str] | None = None,
        name: str = "images",
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                "images must be a uint8 tensor (N, C, H, W), "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        if labels is None:
            labels = torch.full((images.shape[0],), UNLABELED, dtype=torch.int64)
        if labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"{name}: {images.shape[0]} images but {labels.shape[0]} labels; "
                "each image needs exactly one label"
            )
        self.images = images.contiguous()
        self._labels = labels.to(torch.int64)
        self.classes = classes
        self.name = name

    @property
    def labels(self) -> torch.Tensor:
        return self._labels

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self._labels[index])

    def get_batch(self, indices: torch.Tensor) -> torch.Tensor:
        return self.images[indices]

    def subset(self, indices: torch.Tensor) -> TensorImageDataset:
        return TensorImageDataset(
            self.images[indices], self._labels[indices], self.classes, self.name
        )


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 images (..., C, H, W) with C in (1, 3) as `channels` (1 or 3) channels: gray is
    copied to R, G and B; RGB becomes its BT.601 luma, as PIL's grayscale conversion."""
    have = images.shape[-3]
    if have == channels:
        return images
    if (have, channels) == (1, 3):
        return images.expand(*images.shape[:-3], 3, *images.shape[-2:]).contiguous()
    if (have, channels) == (3, 1):
        luma = torch.tensor(LUMA).view(3, 1, 1)
        gray = (images.float() * luma).sum(dim=-3, keepdim=True)
        return gray.round().clamp(0, 255).to(torch.uint8)
    raise ValueError(f"cannot convert {have}-channel images to {channels} channels")


class ChannelConvertedDataset(ImageDataset):
    """A lazy view on an image dataset with its images converted to `channels` channels
    (for sources read from files; in-memory ones are converted once by `match_channels`)."""

    def __init__(self, base: ImageDataset, channels: int) -> None:
        self.base = base
        self.channels = channels
        self.classes = base.classes
        self.name = base.name

    @property
    def labels(self) -> torch.Tensor:
        return self.base.labels

    @property
    def paths(self) -> list[str] | None:
        """The source's files, for sources read from files (None otherwise)."""
        return getattr(self.base, "paths", None)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.base.image_shape[1:])  # type: ignore[return-value]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[index]
        return convert_channels(image, self.channels), label

    def get_batch(self, indices: torch.Tensor) -> torch.Tensor:
        return convert_channels(self.base.get_batch(indices), self.channels)


class BatchDataset(Dataset):
    """A source whose `get_batch(indices)` returns the whole training batch as a dict of CPU
    tensors (text: token ids, segments, pair labels). The engine moves it to the device and
    hands it to the task as is; the task knows which keys its data provides.
    """

    name: str = "batches"
    classes: list[str] | None = None

    @property
    def labels(self) -> torch.Tensor:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def get_batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError
