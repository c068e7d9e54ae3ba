"""Label budgets: stratified subsets of the training labels, and dataset views on them."""

from __future__ import annotations

import math

import torch

from selfsup.data.base import ImageDataset
from selfsup.errors import DataError, SelfSupError


def parse_fraction(text: str) -> float:
    """A label budget as the CLI spells it: '10%' or '0.1' -> 0.1 (ValueError otherwise)."""
    text = text.strip()
    return float(text[:-1]) / 100 if text.endswith("%") else float(text)


def stratified_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Sorted indices of round(fraction * n_c) samples of every class c (at least one each).

    Unlabelled samples (-1) are never picked. For a fixed seed the subsets are nested: the 1%
    subset lies inside the 10% one, so label-efficiency curves compare like with like.
    """
    if not 0.0 < fraction <= 1.0:
        raise SelfSupError(
            f"label fraction {fraction} is out of range; use a value in (0, 1], e.g. 0.01 for 1%"
        )
    labels = labels.detach().cpu().to(torch.int64)
    classes = torch.unique(labels[labels >= 0])
    if classes.numel() == 0:
        raise DataError("the dataset has no labelled samples; evaluation needs labels")
    generator = torch.Generator().manual_seed(int(seed))
    picked = []
    for c in classes.tolist():
        members = torch.nonzero(labels == c).flatten()
        # Half-up rounding (Python's round() is banker's), clamped to [1, n_c].
        take = min(members.numel(), max(1, math.floor(fraction * members.numel() + 0.5)))
        # Drawing a full permutation per class (independent of fraction) keeps subsets nested.
        order = torch.randperm(members.numel(), generator=generator)
        picked.append(members[order[:take]])
    return torch.sort(torch.cat(picked)).values


def require_two_classes(labels: torch.Tensor, name: str, hint: str) -> None:
    """Refuse a train split whose labels are all one class: every method would score 1.0."""
    if labels[labels >= 0].unique().numel() < 2:
        raise DataError(
            f"the train split of {name} holds a single class: every method would score 1.0; "
            f"evaluation needs at least two ({hint})"
        )


class SubsetImageDataset(ImageDataset):
    """A lazy view on some samples of another image dataset (for sources without `subset`)."""

    def __init__(self, base: ImageDataset, indices: torch.Tensor) -> None:
        self.base = base
        self.indices = indices.to(torch.int64).cpu()
        self.classes = base.classes
        self.name = base.name

    @property
    def labels(self) -> torch.Tensor:
        return self.base.labels[self.indices]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.base.image_shape

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.base[int(self.indices[index])]

    def get_batch(self, indices: torch.Tensor) -> torch.Tensor:
        return self.base.get_batch(self.indices[indices.cpu()])


def subset_dataset(dataset: ImageDataset, indices: torch.Tensor) -> ImageDataset:
    """The samples at `indices`: the dataset's own `subset` when it has one, else a lazy view."""
    if hasattr(dataset, "subset"):
        return dataset.subset(indices)
    return SubsetImageDataset(dataset, indices)
