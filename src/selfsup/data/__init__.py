"""Data sources: every image source becomes an ImageDataset of uint8 (C, H, W) images.

`load_images("fashion-mnist:DIR", "train")` is the one entry point; `DATA_SPECS` lists the kinds.
"""

from __future__ import annotations

from selfsup.data.base import UNLABELED, BatchDataset, ImageDataset, TensorImageDataset
from selfsup.data.download import download_dataset
from selfsup.data.folder import FolderImageDataset
from selfsup.data.grouped import GroupedImageDataset, load_grouped
from selfsup.data.spec import DATA_SPECS, load_images, parse_spec
from selfsup.data.video import VideoDataset, sample_windows

__all__ = [
    "DATA_SPECS",
    "UNLABELED",
    "BatchDataset",
    "FolderImageDataset",
    "GroupedImageDataset",
    "ImageDataset",
    "TensorImageDataset",
    "VideoDataset",
    "download_dataset",
    "load_grouped",
    "load_images",
    "parse_spec",
    "sample_windows",
]
