"""Image folders: `DIR/<class>/*.png` (labelled), `DIR/*.jpg` (unlabeled), or `DIR/train` (or
`training`) with `DIR/test` (or `testing`, `val`, `valid`, `validation`, `dev`) holding either
layout.

Files are decoded lazily, one per `__getitem__`, so DataLoader worker processes share the work;
the labels come from the paths and are known before any image is read.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from selfsup.data.base import UNLABELED, ImageDataset, note
from selfsup.data.split import stratified_split
from selfsup.errors import DataError, NoTestSplit

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
# Files that operating systems write beside images (lower case); hidden ones (.DS_Store,
# ._name AppleDouble files) are skipped by their leading dot.
JUNK_FILES = frozenset({"thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", "icon\r"})
# Names of the training split and of the held-out split beside it, in order of preference.
TRAIN_DIRS = ("train", "training")
TEST_DIRS = ("test", "testing", "val", "valid", "validation", "dev")
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
    """Decode one file to a (3, size, size) uint8 tensor: upright as its EXIF orientation says,
    RGB, center square crop, resize. 16-bit images are scaled to 8 bits and float images taken
    as intensities in [0, 1]; values outside those ranges are refused rather than clipped."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: let the decoder downscale, much faster
            if img.getexif().get(ExifTags.Base.Orientation, 1) != 1:
                # Cameras store the pixels as shot and say in EXIF how to turn them upright.
                img = ImageOps.exif_transpose(img)
            if img.mode == "F" or img.mode == "I" or img.mode.startswith("I;16"):
                img = _to_8bit(img, path)
            img = img.convert("RGB")
            w, h = img.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            # Crop before resizing: resize(box=...) would blend in pixels from outside the box.
            img = img.crop((left, top, left + side, top + side))
            img = img.resize((size, size), Image.Resampling.BICUBIC)
            array = np.asarray(img, dtype=np.uint8)
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(
            f"{path} could not be decoded as an image ({exc}); delete or replace the file"
        ) from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def _to_8bit(img: Image.Image, path: Path) -> Image.Image:
    """A 16-bit, 32-bit integer or float gray image as 8-bit gray ("L"), scaled by its range:
    PIL's own conversion clips, turning 16-bit images white and [0, 1] floats black."""
    array = np.asarray(img)
    low, high = array.min(), array.max()
    if img.mode == "F":
        if not (np.isfinite(array).all() and low >= 0 and high <= 1):
            raise DataError(
                f"{path} holds float pixels from {low} to {high}; float images are read as "
                "intensities in [0, 1]: rescale it to that range or save it with 8-bit pixels"
            )
        scaled = np.clip(array.astype(np.float32) * 255 + 0.5, 0, 255)
    else:
        # 16-bit PNG and TIFF open as "I;16"; 16-bit PGM and 32-bit TIFF as 32-bit "I", whose
        # range is only known from the values: 0-65535 is taken as 16-bit.
        if low < 0 or high > 65535:
            raise DataError(
                f"{path} holds integer pixels from {low} to {high}, outside the 16-bit range "
                "0-65535; save it with 8- or 16-bit pixels"
            )
        scaled = (array.astype(np.uint32) + 128) // 257  # 65535 -> 255, rounded
    return Image.fromarray(scaled.astype(np.uint8), "L")


def natural_key(name: str) -> tuple:
    """Sort key putting frame_2 before frame_10 (runs of digits compare as numbers); the
    name itself breaks ties (frame_01 and frame_1), so the order is total."""
    # re.split with a group alternates text and digit runs, so the parts always compare
    # text with text and number with number.
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


def _visible(name: str | Path) -> bool:
    name = Path(name).name
    return not name.startswith(".") and name.lower() not in JUNK_FILES


def _image_files(directory: Path, recursive: bool) -> list[Path]:
    """Image files under `directory`, sorted; any other visible file is an error."""
    entries = directory.rglob("*") if recursive else directory.iterdir()
    # Skip hidden files (.DS_Store) and anything inside hidden folders (.ipynb_checkpoints),
    # and the thumbnail caches and folder settings of Windows (Thumbs.db, desktop.ini).
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


def _require_directory(directory: Path) -> None:
    if directory.is_file():
        raise DataError(
            f"folder: {directory} is a file, not a directory; folder: takes a directory of "
            "images (DIR/<class>/* or DIR/*): give the folder that holds it"
        )
    if not directory.is_dir():
        raise DataError(f"folder: directory {directory} does not exist; check the path")


def _scan(directory: Path) -> tuple[list[Path], np.ndarray, list[str] | None]:
    """(paths, labels, classes) of a folder: class sub-folders, or a flat unlabeled folder."""
    _require_directory(directory)
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
    files_of = {d: _image_files(d, recursive=True) for d in subdirs}
    kept = [d for d in subdirs if files_of[d]]
    empty = [d.name for d in subdirs if not files_of[d]]
    if kept and empty:
        # A class without images cannot be learnt or scored; keeping it would only shift the
        # label numbers and the chance level.
        note(f"folder: {directory}: class folders without images left out: {', '.join(empty)}")
    _check_nesting(directory, kept, files_of)
    classes = [d.name for d in kept]
    paths: list[Path] = []
    label_list: list[int] = []
    for label, subdir in enumerate(kept):
        paths += files_of[subdir]
        label_list += [label] * len(files_of[subdir])
    return paths, np.asarray(label_list, dtype=np.int64), classes


def _check_nesting(directory: Path, classes: list[Path], files_of: dict[Path, list[Path]]) -> None:
    """Class folders holding images only in sub-folders (cat/2019/, cat/2020/) are one class
    each: say so, as the sub-folders may be the real classes; stop where a single such folder
    would make the whole data one class."""
    for d in classes:
        if any(f.parent == d for f in files_of[d]):
            continue
        subs = sorted({f.relative_to(d).parts[0] for f in files_of[d]})
        shown = ", ".join(subs[:5]) + (", ..." if len(subs) > 5 else "")
        if len(classes) == 1:
            raise DataError(
                f"folder: the only folder in {directory}, {d.name}/, holds no images directly, "
                f"only sub-folders ({shown}); point folder: at {d} to use them as classes"
            )
        note(
            f"folder: class folder {d} holds no images directly; the images of its "
            f"sub-folders ({shown}) all get the label {d.name!r}"
        )


def _require_images(paths: list[Path], directory: Path) -> None:
    if not paths:
        raise DataError(
            f"folder: no images in {directory}; add image files "
            f"({', '.join(sorted(IMAGE_EXTENSIONS))}) directly or in one sub-folder per class"
        )


def _check_holdout(
    directory: Path, labels: np.ndarray, test_idx: np.ndarray, classes: list[str]
) -> None:
    """Classes too small for the hold-out are only trained on: say which, and stop when the
    test part is left with one class, which every method would score perfectly."""
    counts = np.bincount(labels, minlength=len(classes))
    tested = set(labels[test_idx].tolist())
    untested = [
        f"{classes[c]} ({counts[c]} image{'' if counts[c] == 1 else 's'})"
        for c in range(len(classes))
        if c not in tested
    ]
    if not untested:
        return
    fix = "a class needs 3 images for one test image"
    if not tested:
        raise NoTestSplit(
            f"folder: no class of {directory} is large enough for the {TEST_FRACTION:.0%} test "
            f"hold-out ({fix}); add images or give DIR/train + DIR/test"
        )
    if len(tested) == 1:
        raise DataError(
            f"folder: the {TEST_FRACTION:.0%} test hold-out of {directory} holds only class "
            f"{classes[next(iter(tested))]}, which any method would score perfectly; "
            f"{', '.join(untested)} are too small ({fix}): add images or give DIR/train + "
            "DIR/test"
        )
    note(
        f"folder: classes too small for the {TEST_FRACTION:.0%} test hold-out of {directory} "
        f"have no test images, so the scores leave them out: {', '.join(untested)} ({fix})"
    )


def _split_folders(directory: Path) -> tuple[Path, Path | None] | None:
    """(train, test or None) folders where DIR is laid out by split, else None."""
    trains = [directory / name for name in TRAIN_DIRS if (directory / name).is_dir()]
    if len(trains) != 1:
        return None  # neither, or both (then they are classes: no layout has two train splits)
    train = trains[0]
    held_out = [directory / name for name in TEST_DIRS if (directory / name).is_dir()]
    if held_out:
        test = held_out[0]
        if len(held_out) > 1:
            unused = ", ".join(f"{d.name}/" for d in held_out[1:])
            note(f"folder: {directory}: testing on {test.name}/; {unused} not read")
        elif test.name != "test":
            note(f"folder: {directory}: testing on {test.name}/ (the held-out split)")
        return train, test
    others = [p for p in directory.iterdir() if p != train and _visible(p)]
    if others:
        return None  # "train" is one class folder among others (e.g. vehicles)
    note(f"folder: {directory} holds only {train.name}/; reading {train} (labelled: 20% held out)")
    return train, None


def load_folder(directory: Path, split: str, image_size: int | None = None) -> FolderImageDataset:
    """One split of an image folder (see the module docstring for the layouts)."""
    size = image_size or DEFAULT_IMAGE_SIZE
    name = f"folder:{directory.name}"
    _require_directory(directory)
    splits = _split_folders(directory)
    if splits is not None and splits[1] is None:
        directory = splits[0]
    elif splits is not None:
        train_dir, test_dir = splits
        train_paths, train_labels, classes = _scan(train_dir)
        _require_images(train_paths, train_dir)
        if split == "train":
            labels = torch.from_numpy(train_labels)
            return FolderImageDataset(train_paths, labels, classes, size, name)
        paths, labels, test_classes = _scan(test_dir)
        _require_images(paths, test_dir)
        if test_classes is not None:
            unknown = sorted(set(test_classes) - set(classes or []))
            if unknown:
                raise DataError(
                    f"folder: {test_dir} has class folders {unknown} that "
                    f"{train_dir} lacks; train and test need the same classes"
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
    if split == "test":
        _check_holdout(directory, labels, test_idx, classes)
    idx = train_idx if split == "train" else test_idx
    return FolderImageDataset(
        [paths[i] for i in idx], torch.from_numpy(labels[idx]), classes, size, name
    )
