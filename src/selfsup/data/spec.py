"""`load_images("kind:DIR", split)`: one entry point from a data spec string to an ImageDataset."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from selfsup.data.base import ImageDataset, TensorImageDataset
from selfsup.data.cifar import load_cifar10, resolve_cifar_dir
from selfsup.data.digits import load_digits_dataset
from selfsup.data.download import download_dataset
from selfsup.data.folder import load_folder
from selfsup.data.grouped import load_grouped
from selfsup.data.idx import find_idx_file, idx_filenames, load_idx_dataset
from selfsup.errors import DataError, SelfSupError

DATA_SPECS: dict[str, str] = {
    "digits": "scikit-learn's bundled 8x8 digits (1,797 images, 10 classes); needs no files",
    "mnist": "mnist:DIR - MNIST IDX files (train-images-idx3-ubyte[.gz], ...) in DIR",
    "fashion-mnist": "fashion-mnist:DIR - Fashion-MNIST IDX files in DIR",
    "cifar10": "cifar10:DIR - CIFAR-10 binary (data_batch_*.bin) or python batches in DIR",
    "folder": "folder:DIR - image files: DIR/<class>/*, a flat DIR/*, or DIR/train + DIR/test",
    "grouped": "grouped:PATH - images in groups (MICLe): a CSV manifest path,group[,label] "
    "or DIR/<group>/* folders",
    "moving-mnist": "moving-mnist:DIR - Moving MNIST clips generated from the MNIST IDX files "
    "in DIR (options: DIR?clips=2000&frames=20&size=64&seed=0)",
    "video": "video:DIR - clips: DIR/<clip>/* frame images or DIR/*.npy arrays "
    "(options: DIR?length=16&stride=1)",
}
SPLITS = ("train", "test")
DOWNLOADABLE = ("mnist", "fashion-mnist", "cifar10")


def parse_spec(spec: str) -> tuple[str, Path | None]:
    """Split "kind:DIR" into (kind, Path(DIR)); "digits" has no directory."""
    kind, sep, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in DATA_SPECS:
        hint = f" (for an image folder write folder:{spec})" if not sep else ""
        raise SelfSupError(
            f"unknown data spec '{spec}'{hint}; valid kinds: {', '.join(DATA_SPECS)} "
            "(e.g. digits, mnist:./data/mnist, folder:./images); text: text:PATH, "
            "tsv:PATH[,TEST], csv:PATH[,TEST], parallel:A,B"
        )
    if kind == "digits":
        if rest:
            raise SelfSupError(f"data spec '{spec}': digits takes no directory; write 'digits'")
        return kind, None
    if not rest:
        raise SelfSupError(f"data spec '{spec}': {kind} needs a directory; write {kind}:DIR")
    return kind, Path(rest).expanduser()


def _files_present(kind: str, directory: Path) -> bool:
    if kind == "cifar10":
        try:
            resolve_cifar_dir(directory)
        except DataError:
            return False
        return True
    names = [n for split in SPLITS for n in idx_filenames(split)]
    return directory.is_dir() and all(find_idx_file(directory, n) for n in names)


def resize_images(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize uint8 (N, C, H, W) images to (size, size) with antialiased bilinear filtering."""
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, images.shape[0], chunk):
        batch = images[start : start + chunk].float()
        resized = F.interpolate(
            batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out[start : start + chunk] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _load_files(kind: str, directory: Path, split: str) -> TensorImageDataset:
    if kind == "cifar10":
        return load_cifar10(directory, split)
    return load_idx_dataset(directory, split, kind)


def load_images(
    spec: str, split: str = "train", *, image_size: int | None = None, download: bool = False
) -> ImageDataset:
    """Load the `split` ("train" or "test") of the images named by `spec`.

    `spec` is one of DATA_SPECS' kinds, with ":DIR" where the kind reads files. `image_size`
    resizes to square images (folders default to 32; in-memory sets keep their size when None).
    `download=True` fetches MNIST, Fashion-MNIST or CIFAR-10 into DIR when the files are missing.
    """
    if split not in SPLITS:
        raise SelfSupError(f"unknown split '{split}'; use one of: {', '.join(SPLITS)}")
    if image_size is not None and image_size < 1:
        raise SelfSupError(f"image_size must be a positive number of pixels, got {image_size}")
    kind, directory = parse_spec(spec)

    if kind == "folder":
        return load_folder(directory, split, image_size)  # type: ignore[arg-type]
    if kind == "grouped":
        return load_grouped(directory, split, image_size)  # type: ignore[arg-type]
    if kind in ("moving-mnist", "video"):
        # Video loaders read their own "DIR?options" text and resize frame by frame.
        from selfsup.data.moving_mnist import load_moving_mnist
        from selfsup.data.video import load_video

        loader = load_moving_mnist if kind == "moving-mnist" else load_video
        return loader(spec.partition(":")[2].strip(), split, image_size)

    if directory is not None and download and not _files_present(kind, directory):
        download_dataset(kind, directory)

    dataset: TensorImageDataset
    if kind == "digits":
        dataset = load_digits_dataset(split)
    else:
        try:
            dataset = _load_files(kind, directory, split)  # type: ignore[arg-type]
        except DataError:
            if not download:
                raise
            # Every file is there but one is damaged (truncated, corrupt): with --download,
            # fetch it again rather than only saying so. download_dataset checks each file's
            # md5 and replaces those that differ (CIFAR-10: extracts the checked archive again).
            download_dataset(kind, directory, refresh=True)  # type: ignore[arg-type]
            dataset = _load_files(kind, directory, split)  # type: ignore[arg-type]

    if image_size is not None and dataset.images.shape[-1] != image_size:
        dataset = TensorImageDataset(
            resize_images(dataset.images, image_size), dataset.labels, dataset.classes, dataset.name
        )
    return dataset
