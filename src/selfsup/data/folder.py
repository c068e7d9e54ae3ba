"""Image folders: `DIR/<class>/*.png` (labelled), `DIR/*.jpg` (unlabeled), or `DIR/{train,test}`.

Files are decoded lazily, one per `__getitem__`, so DataLoader worker processes share the work;
the labels come from the paths and are known before any image is read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from selfsup.data.base import UNLABELED, ImageDataset
from selfsup.data.split import stratified_split
from selfsup.errors import DataError, NoTestSplit

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
DEFAULT_IMAGE_SIZE = 32
TEST_FRACTION = 0.2
SEED = 0


class FolderImageDataset(ImageDataset):
    """Images read from files on demand: center-cropped to a square, resized, RGB uint8."""

    def __init__(
        self,
        paths: list[Path],
        labels: torch.Tensor,
        classes: list[str] | None,
        image_size: int = DEFAULT_IMAGE_SIZE,
        name: str = "folder",
    ) -> None:
        self.paths = [str(p) for p in paths]  # plain strings pickle cheaply to workers
        self._labels = labels.to(torch.int64)
        self.classes = classes
        self.image_size = int(image_size)
        self.name = name

    @property
    def labels(self) -> torch.Tensor:
        return self._labels

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return load_image(Path(self.paths[index]), self.image_size), int(self._labels[index])

    def subset(self, indices: torch.Tensor) -> FolderImageDataset:
        return FolderImageDataset(
            [Path(self.paths[int(i)]) for i in indices],
            self._labels[indices],
            self.classes,
            self.image_size,
            self.name,
        )


def load_image(path: Path, size: int) -> torch.Tensor:
    """Decode one file to a (3, size, size) uint8 tensor: RGB, center square crop, resize."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: let the decoder downscale, much faster
            img = img.convert("RGB")
            w, h = img.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            # Crop before resizing: resize(box=...) would blend in pixels from outside the box.
            img = img.crop((left, top, left + side, top + side))
            img = img.resize((size, size), Image.Resampling.BICUBIC)
            array = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(
            f"{path} could not be decoded as an image ({exc}); delete or replace the file"
        ) from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def _visible(name: str | Path) -> bool:
    return not str(Path(name).name).startswith(".")


def _image_files(directory: Path, recursive: bool) -> list[Path]:
    """Image files under `directory`, sorted; any other visible file is an error."""
    entries = directory.rglob("*") if recursive else directory.iterdir()
    # Skip hidden files (.DS_Store) and anything inside hidden folders (.ipynb_checkpoints).
    files = sorted(
        p
        for p in entries
        if p.is_file() and all(_visible(q) for q in p.relative_to(directory).parts)
    )
    for path in files:
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DataError(
                f"{path} is not an image (extension '{path.suffix}'); image folders may hold only "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))} files, move it out"
            )
    return files


def _scan(directory: Path) -> tuple[list[Path], np.ndarray, list[str] | None]:
    """(paths, labels, classes) of a folder: class sub-folders, or a flat unlabeled folder."""
    if not directory.is_dir():
        raise DataError(f"folder: directory {directory} does not exist; check the path")
    subdirs = sorted(p for p in directory.iterdir() if p.is_dir() and _visible(p))
    top_files = _image_files(directory, recursive=False)
    if subdirs and top_files:
        raise DataError(
            f"folder: {directory} mixes images ({top_files[0].name}, ...) with class folders; "
            "put every image inside a class folder, or use a flat folder without sub-folders"
        )
    if not subdirs:
        labels = np.full(len(top_files), UNLABELED, dtype=np.int64)
        return top_files, labels, None
    classes = [d.name for d in subdirs]
    paths: list[Path] = []
    label_list: list[int] = []
    for label, subdir in enumerate(subdirs):
        files = _image_files(subdir, recursive=True)
        paths += files
        label_list += [label] * len(files)
    return paths, np.asarray(label_list, dtype=np.int64), classes


def _require_images(paths: list[Path], directory: Path) -> None:
    if not paths:
        raise DataError(
            f"folder: no images in {directory}; add image files "
            f"({', '.join(sorted(IMAGE_EXTENSIONS))}) directly or in one sub-folder per class"
        )


def load_folder(directory: Path, split: str, image_size: int | None = None) -> FolderImageDataset:
    """One split of an image folder (see the module docstring for the layouts)."""
    size = image_size or DEFAULT_IMAGE_SIZE
    name = f"folder:{directory.name}"
    if (directory / "train").is_dir() and (directory / "test").is_dir():
        train_paths, train_labels, classes = _scan(directory / "train")
        _require_images(train_paths, directory / "train")
        if split == "train":
            labels = torch.from_numpy(train_labels)
            return FolderImageDataset(train_paths, labels, classes, size, name)
        paths, labels, test_classes = _scan(directory / "test")
        _require_images(paths, directory / "test")
        if test_classes is not None:
            unknown = sorted(set(test_classes) - set(classes or []))
            if unknown:
                raise DataError(
                    f"folder: {directory / 'test'} has class folders {unknown} that "
                    f"{directory / 'train'} lacks; train and test need the same classes"
                )
            # Test labels index the train class list so both splits agree.
            remap = np.asarray([classes.index(c) for c in test_classes], dtype=np.int64)
            labels = remap[labels]
        return FolderImageDataset(paths, torch.from_numpy(labels), classes, size, name)

    paths, labels, classes = _scan(directory)
    _require_images(paths, directory)
    if classes is None:
        if split == "test":
            raise NoTestSplit(
                f"folder: {directory} is a flat folder without class sub-folders, so there are no "
                "labels to evaluate on; put images in DIR/<class>/ folders or give DIR/train and "
                "DIR/test"
            )
        return FolderImageDataset(paths, torch.from_numpy(labels), None, size, name)
    train_idx, test_idx = stratified_split(labels, TEST_FRACTION, seed=SEED)
    idx = train_idx if split == "train" else test_idx
    return FolderImageDataset(
        [paths[i] for i in idx], torch.from_numpy(labels[idx]), classes, size, name
    )
