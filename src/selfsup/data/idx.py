"""MNIST-family IDX files (MNIST, Fashion-MNIST), gzipped or not.

Format (yann.lecun.com/exdb/mnist): a big-endian header of two zero bytes, a dtype code
(0x08 = uint8), the number of dimensions, then one uint32 per dimension, then the raw data.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from selfsup.data.base import TensorImageDataset
from selfsup.errors import DataError

IMAGES_MAGIC = 2051  # uint8, 3 dimensions (N, H, W)
LABELS_MAGIC = 2049  # uint8, 1 dimension (N,)

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

_PREFIX = {"train": "train", "test": "t10k"}


def idx_filenames(split: str) -> tuple[str, str]:
    """The canonical (uncompressed) image and label file names of a split."""
    prefix = _PREFIX[split]
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def find_idx_file(directory: Path, name: str) -> Path | None:
    """The file for `name` in `directory`: .gz first, then uncompressed, then the dotted form."""
    dotted = name.replace("-idx", ".idx")
    for candidate in (f"{name}.gz", name, f"{dotted}.gz", dotted):
        path = directory / candidate
        if path.is_file():
            return path
    return None


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if not raw.startswith(b"\x1f\x8b"):
        if path.suffix == ".gz":
            raise DataError(f"{path} is not a gzip file (bad header); re-download it")
        return raw
    try:
        # zlib with wbits=47 reads the gzip container directly and is faster than gzip.decompress.
        decomp = zlib.decompressobj(wbits=47)
        data = decomp.decompress(raw)
        if not decomp.eof:
            raise DataError(f"{path} is truncated (gzip stream ends early); re-download it")
        if decomp.unused_data:  # rare multi-member gzip: let the gzip module handle it
            data = gzip.decompress(raw)
        return data
    except (zlib.error, gzip.BadGzipFile, EOFError) as exc:
        raise DataError(f"{path} is corrupt ({exc}); re-download it") from exc


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read one IDX file as a uint8 array, checking the magic number and the data length."""
    data = _read_bytes(path)
    ndim = magic & 0xFF
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"{path} is too short to be an IDX file; re-download it")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(
            f"{path} has IDX magic number {found}, expected {magic} "
            f"({'images' if magic == IMAGES_MAGIC else 'labels'}); is it the right file?"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims))
    if len(data) - header_len != expected:
        raise DataError(
            f"{path} holds {len(data) - header_len} data bytes but its header {dims} needs "
            f"{expected}; the file is truncated or corrupt, re-download it"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)


def _require_file(directory: Path, name: str, kind: str) -> Path:
    path = find_idx_file(directory, name)
    if path is None:
        raise DataError(
            f"{kind}: missing {name}[.gz] in {directory}; copy the IDX files there "
            "or pass download=True (--download)"
        )
    return path


def load_idx_dataset(directory: Path, split: str, kind: str = "mnist") -> TensorImageDataset:
    """Load one split of an MNIST-style IDX folder as uint8 images (N, 1, H, W)."""
    if not directory.is_dir():
        raise DataError(
            f"{kind}: directory {directory} does not exist; point {kind}:DIR at the folder with "
            "the IDX files or pass download=True (--download)"
        )
    image_name, label_name = idx_filenames(split)
    image_path = _require_file(directory, image_name, kind)
    label_path = _require_file(directory, label_name, kind)
    images = read_idx(image_path, IMAGES_MAGIC)
    labels = read_idx(label_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(
            f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels; "
            "the two files belong to different sets, re-download them"
        )
    classes = FASHION_MNIST_CLASSES if kind == "fashion-mnist" else MNIST_CLASSES
    if len(labels) and int(labels.max()) >= len(classes):
        raise DataError(
            f"{label_path} has label {int(labels.max())} but {kind} has {len(classes)} classes; "
            "is it the right file?"
        )
    # frombuffer views read-only bytes; copy once so torch owns writable memory.
    image_tensor = torch.from_numpy(images.copy()).unsqueeze(1)
    label_tensor = torch.from_numpy(labels.astype(np.int64))
    return TensorImageDataset(image_tensor, label_tensor, list(classes), name=kind)
