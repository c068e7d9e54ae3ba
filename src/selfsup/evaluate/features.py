"""Batches out of any image dataset, and frozen-backbone feature extraction."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader

from selfsup.data.base import ImageDataset
from selfsup.engine import _Progress
from selfsup.errors import DataError


def _has_fast_batches(dataset: ImageDataset) -> bool:
    # In-memory datasets override get_batch and index a whole batch at once; lazy ones
    # (image folders) would read files one by one on the main process, so they go to workers.
    return type(dataset).get_batch is not ImageDataset.get_batch


def default_num_workers() -> int:
    """DataLoader workers for lazy datasets: all cores but one, at most 8."""
    return min(8, max(0, (os.cpu_count() or 1) - 1))


def iterate_batches(
    dataset: ImageDataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (uint8 images (B, C, H, W), int64 labels (B,)) once over the dataset."""
    n = len(dataset)
    if _has_fast_batches(dataset):
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        labels = dataset.labels
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            yield dataset.get_batch(idx), labels[idx]
        return
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        drop_last=drop_last and n >= batch_size,
        num_workers=default_num_workers(),
    )
    try:
        for images, labels in loader:
            yield images, torch.as_tensor(labels, dtype=torch.int64)
    except DataError as error:
        # A worker's error arrives with its traceback folded into the message; the user
        # needs only the file and the fix, as pretraining reports them.
        from selfsup.engine import _worker_message

        raise DataError(_worker_message(error)) from None


def _progress():
    """A rich progress bar on a terminal; None when stderr is a pipe or a file (logs, CI)."""
    if not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


PROGRESS_INTERVAL = 10.0  # seconds at least between two progress lines off a terminal


class StepProgress(_Progress):
    """The steps of one training row (fine-tuning, from scratch), shown as pretraining shows
    its own: a bar on a terminal (cleared when the row is done, its result line stays), a
    line every 10% elsewhere (CI, files), but not more often than every PROGRESS_INTERVAL
    seconds, so that rows of a few seconds (the demo's) add no lines. `label` None: nothing is
    shown."""

    def __init__(self, label: str | None, total: int) -> None:
        super().__init__(total, 0, label is not None, label, True, PROGRESS_INTERVAL)


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    dataset: ImageDataset,
    *,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Features (N, D) float32 on the CPU, the backbone in eval mode and without gradients.

    The backbone is moved to `device`; its train/eval mode is restored afterwards.
    """
    was_training = backbone.training
    backbone.to(device).eval()
    chunks = []
    total = len(dataset)
    progress = _progress() if total > 4 * batch_size else None
    try:
        if progress is not None:
            progress.start()
            task = progress.add_task(f"features {getattr(dataset, 'name', '')}", total=total)
        for images, _ in iterate_batches(dataset, batch_size):
            x = images.to(device, non_blocking=True).float().div_(255)
            chunks.append(backbone(x).flatten(1).float().cpu())
            if progress is not None:
                progress.advance(task, images.shape[0])
    finally:
        if progress is not None:
            progress.stop()
        backbone.train(was_training)
    if not chunks:
        return torch.zeros(0, int(getattr(backbone, "feature_dim", 0)))
    return torch.cat(chunks)


def raw_pixels(dataset: ImageDataset, *, max_side: int = 32) -> torch.Tensor:
    """Flattened pixels / 255 (N, C*H*W) float32: the "no representation at all" baseline.

    Images larger than `max_side` are area-downsampled first, so a folder of 224x224 photos
    does not produce 150k-dimensional vectors (at 32x32 that is CIFAR's raw-pixel baseline).
    """
    chunks = []
    for images, _ in iterate_batches(dataset, 1024):
        x = images.float().div_(255)
        if max(x.shape[-2:]) > max_side:
            scale = max_side / max(x.shape[-2:])
            size = (max(1, round(x.shape[-2] * scale)), max(1, round(x.shape[-1] * scale)))
            x = nn.functional.interpolate(x, size=size, mode="area")
        chunks.append(x.flatten(1))
    return torch.cat(chunks) if chunks else torch.zeros(0, 0)
