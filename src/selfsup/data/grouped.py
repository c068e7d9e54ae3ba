"""Grouped images: several images per group (a patient, an object, a scene) for MICLe.

`grouped:PATH` reads either a CSV manifest `path,group[,label]` (or tab-separated; paths
relative to the manifest, or absolute) or a directory tree `DIR/<group>/*.png` with one folder
per group and optional labels in `DIR/labels.csv` (`path,label` per image, paths relative to
DIR, or `group,label` per group).
Images are decoded lazily like `folder:DIR`. When every image has a label, the test split is 20%
of the *groups*, stratified by label, so no group (patient) is on both sides; unlabelled data is
all "train" (pretraining only).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from selfsup.data.base import UNLABELED, ImageDataset, note
from selfsup.data.folder import DEFAULT_IMAGE_SIZE, FolderImageDataset, _image_files, _visible
from selfsup.data.split import stratified_split
from selfsup.errors import DataError, NoTestSplit

TEST_FRACTION = 0.2
SEED = 0
LABELS_FILE = "labels.csv"


class GroupedImageDataset(ImageDataset):
    """Any ImageDataset plus an int64 group id per image.

    `extras(indices)` adds to each training batch "partners" (uint8 images of another member
    of each image's group, drawn with torch's global RNG; the image itself when its group has
    one member) and "groups" (the group ids).
    """

    def __init__(
        self, dataset: ImageDataset, groups: torch.Tensor, group_names: list[str] | None = None
    ) -> None:
        groups = torch.as_tensor(groups, dtype=torch.int64)
        if groups.shape != (len(dataset),):
            raise ValueError(
                f"{dataset.name}: {len(dataset)} images but group ids of shape "
                f"{tuple(groups.shape)}; give one group id per image"
            )
        self.dataset = dataset
        self.groups = groups
        self.group_names = group_names
        self.name = dataset.name
        self.classes = dataset.classes
        # Members sorted by group: group g owns order[start[g] : start[g] + count[g]], and
        # slot[i] is image i's place in its group, so a partner is a random *other* slot.
        _, dense = torch.unique(groups, return_inverse=True)
        self._dense = dense
        self._order = torch.argsort(dense, stable=True)
        self._count = torch.bincount(dense)
        self._start = torch.cumsum(self._count, 0) - self._count
        self._slot = torch.empty_like(dense)
        self._slot[self._order] = torch.arange(len(dense)) - self._start[dense[self._order]]

    @property
    def labels(self) -> torch.Tensor:
        return self.dataset.labels

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.dataset.image_shape

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.dataset[index]

    def partner_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """For each index, a uniformly random other member of its group (itself if alone)."""
        indices = indices.cpu().long()
        group = self._dense[indices]
        count = self._count[group]
        # float64: float32 products could round up to count - 1 for very large groups.
        draw = torch.rand(indices.shape[0], dtype=torch.float64) * (count - 1).clamp(min=1)
        slot = draw.long().clamp(max=(count - 2).clamp(min=0))
        slot = slot + (slot >= self._slot[indices]).long()  # skip the image's own slot
        partner = self._order[(self._start[group] + slot).clamp(max=len(self._order) - 1)]
        return torch.where(count > 1, partner, indices)

    def extras(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        partners = self.dataset.get_batch(self.partner_indices(indices))
        return {"partners": partners, "groups": self.groups[indices.cpu()]}


def _sorted_names(values: set[str]) -> list[str]:
    """Class or group names in natural order: numerically when they are all integers."""
    if all(v.lstrip("-").isdigit() for v in values):
        return sorted(values, key=int)
    return sorted(values)


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV file (or tab-separated: a header line with tabs and no commas) with
    lower-cased, stripped column names; `required` columns checked."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            first = f.readline()
            delimiter = "\t" if "\t" in first and "," not in first else ","
            f.seek(0)
            lines = [[cell.strip() for cell in row] for row in csv.reader(f, delimiter=delimiter)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(
            f"grouped: {path} could not be read as CSV ({exc}); check the file"
        ) from exc
    lines = [row for row in lines if any(row)]  # blank lines are not images
    header = [h.lower() for h in lines[0]] if lines else []
    rows = [dict(zip(header, row, strict=False)) for row in lines[1:]]
    if not header:
        raise DataError(
            f"grouped: {path} is empty; write a header line {','.join(required)} and one row "
            "per image"
        )
    for column in required:
        if column not in header:
            raise DataError(
                f"grouped: {path} has no '{column}' column (columns: {', '.join(header)}); "
                f"the header line must name {', '.join(required)}"
            )
    if not rows:
        raise DataError(f"grouped: {path} has a header but no rows; add one row per image")
    return rows


def _read_manifest(manifest: Path) -> tuple[list[Path], list[str], list[str]]:
    """(paths, group names, label names or "") of a `path,group[,label]` manifest."""
    rows = _read_csv(manifest, ("path", "group"))
    paths, groups, labels = [], [], []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        if not row.get("path") or not row.get("group"):
            raise DataError(
                f"grouped: {manifest} line {line} has an empty path or group; every row needs both"
            )
        path = manifest.parent / row["path"]
        if not path.is_file():
            raise DataError(
                f"grouped: {manifest} line {line}: image {path} not found; fix the path "
                "(paths are relative to the manifest's folder) or drop the row"
            )
        paths.append(path)
        groups.append(row["group"])
        labels.append(row.get("label", ""))
    return paths, groups, labels


def _read_group_folders(directory: Path) -> tuple[list[Path], list[str], list[str]]:
    """(paths, group names, label names or "") of a DIR/<group>/* tree (+ DIR/labels.csv)."""
    subdirs = sorted(p for p in directory.iterdir() if p.is_dir() and _visible(p))
    top_files = [p for p in directory.iterdir() if p.is_file() and _visible(p)]
    loose = [p for p in top_files if p.name != LABELS_FILE]
    if loose or not subdirs:
        raise DataError(
            f"grouped: {directory} needs one sub-folder per group holding that group's images"
            + (f" ({loose[0].name} is outside any group folder)" if loose else "")
            + "; or pass a CSV manifest path,group[,label]"
        )
    paths: list[Path] = []
    groups: list[str] = []
    for subdir in subdirs:
        files = _image_files(subdir, recursive=True)
        paths += files
        groups += [subdir.name] * len(files)
    if not paths:
        raise DataError(f"grouped: no images in the group folders of {directory}; add images")
    labels = [""] * len(paths)
    if (directory / LABELS_FILE).is_file():
        labels = _folder_labels(directory, paths, groups)
    return paths, groups, labels


def _folder_labels(directory: Path, paths: list[Path], groups: list[str]) -> list[str]:
    """Labels from DIR/labels.csv, keyed by image path (relative to DIR) or by group."""
    table = directory / LABELS_FILE
    rows = _read_csv(table, ("label",))
    key = "path" if "path" in rows[0] else "group"
    if key not in rows[0]:
        raise DataError(f"grouped: {table} needs a 'path' or a 'group' column beside 'label'")
    known = {row[key]: row["label"] for row in rows}
    if key == "path":
        return [known.get(p.relative_to(directory).as_posix(), "") for p in paths]
    return [known.get(g, "") for g in groups]


def load_grouped(path: Path, split: str, image_size: int | None = None) -> GroupedImageDataset:
    """One split of a grouped source (see the module docstring for the two layouts)."""
    if path.is_dir():
        paths, group_names, label_names = _read_group_folders(path)
    elif path.is_file():
        paths, group_names, label_names = _read_manifest(path)
    else:
        raise DataError(
            f"grouped: {path} does not exist; give a CSV manifest (path,group[,label]) or a "
            "directory with one sub-folder of images per group"
        )
    groups_list = _sorted_names(set(group_names))
    group_index = {g: i for i, g in enumerate(groups_list)}
    groups = np.asarray([group_index[g] for g in group_names], dtype=np.int64)
    classes = _sorted_names({label for label in label_names if label}) or None
    class_index = {c: i for i, c in enumerate(classes or [])}
    labels = np.asarray([class_index.get(v, UNLABELED) for v in label_names], dtype=np.int64)

    keep = np.arange(len(paths))
    if (labels >= 0).all():
        # Split whole groups, stratified by each group's first label.
        first = np.unique(groups, return_index=True)[1]
        train_groups, test_groups = stratified_split(labels[first], TEST_FRACTION, seed=SEED)
        chosen = test_groups if split == "test" else train_groups
        keep = np.flatnonzero(np.isin(groups, chosen))
    if split == "test" and (not (labels >= 0).all() or len(keep) == 0):
        raise NoTestSplit(
            f"grouped: {path} has no labelled test split; evaluation needs a 'label' for every "
            "image and at least two groups per class (or evaluate on another --data)"
        )
    images = FolderImageDataset(
        [paths[i] for i in keep],
        torch.from_numpy(labels[keep]),
        classes,
        image_size or DEFAULT_IMAGE_SIZE,
        name=f"grouped:{path.name}",
    )
    kept = torch.from_numpy(groups[keep])
    single = int((torch.bincount(kept) == 1).sum())
    if split == "train" and single:
        # Such an image's positive is a second view of itself: SimCLR's pair, not MICLe's.
        used = len(torch.unique(kept))
        note(
            f"grouped: {single} of {used} groups in {path} hold a single image; their "
            "positives are two views of that image"
            + (" (no group has two: this is SimCLR)" if single == used else "")
        )
    return GroupedImageDataset(images, kept, groups_list)
