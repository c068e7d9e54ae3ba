"""Fine-tuning a backbone with a linear head on the labelled subset, and its from-scratch twin.

Both use the same budget, optimiser, schedule and augmentation, so the only difference
between "fine-tune" and "supervised from scratch" is the starting weights.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from itertools import islice

import torch
from torch import nn

from selfsup.data.base import ImageDataset
from selfsup.errors import DataError, SelfSupError
from selfsup.evaluate.features import iterate_batches

# Default budget bounds: at least enough steps for the cosine schedule to matter, at most
# ~770k images seen, so 100%-label runs stay affordable.
MIN_DEFAULT_STEPS = 100
MAX_DEFAULT_STEPS = 3000


@dataclass
class FinetuneResult:
    """What fine-tuning produced: the trained copy of the backbone, its head, test accuracy."""

    backbone: nn.Module
    head: nn.Linear
    accuracy: float
    steps: int


def default_epochs(n_labels: int) -> int:
    """Epochs for n labelled images: ~816 * sqrt(n) images seen, clamped to [3, 100] epochs.

    1% of MNIST (600) gets 34 epochs, 10% gets 11 and 100% gets 4: few labels need many
    passes, but the total cost still grows only like sqrt(n), so 1%-label runs are fast.
    """
    return int(min(100, max(3, math.ceil(816 / math.sqrt(max(1, n_labels))))))


def _num_classes(*datasets: ImageDataset) -> int:
    for ds in datasets:
        if len(ds) == 0 or not ds.has_labels:
            raise DataError(
                f"dataset {ds.name!r} has no labels (or is empty); fine-tuning needs a "
                "labelled dataset, e.g. the standard train split"
            )
    return max(int(ds.labels.max()) for ds in datasets) + 1


def _freeze(backbone: nn.Module, freeze_stages: int) -> list[nn.Module]:
    if freeze_stages <= 0:
        return []
    if not hasattr(backbone, "stages"):
        raise SelfSupError(
            "freeze_stages needs a backbone with .stages(); use a selfsup backbone or "
            "freeze_stages=0"
        )
    stages = list(backbone.stages())
    if freeze_stages > len(stages):
        raise SelfSupError(
            f"freeze_stages={freeze_stages} but the backbone has only {len(stages)} stages; "
            f"use a value from 0 to {len(stages)}"
        )
    frozen = stages[:freeze_stages]
    for stage in frozen:
        stage.requires_grad_(False)
    return frozen


def _train_batches(dataset: ImageDataset, batch_size: int, generator: torch.Generator):
    """Endless shuffled batches; full ones only, unless the whole set is smaller than one."""
    while True:
        yield from iterate_batches(
            dataset, batch_size, shuffle=True, generator=generator, drop_last=True
        )


@torch.no_grad()
def _test_accuracy(model: nn.Module, test: ImageDataset, device, batch_size: int = 512) -> float:
    model.eval()
    correct = 0
    for images, labels in iterate_batches(test, batch_size):
        logits = model(images.to(device).float().div_(255))
        correct += int((logits.argmax(1).cpu() == labels).sum())
    return correct / max(1, len(test))


def finetune(
    backbone: nn.Module,
    train: ImageDataset,
    test: ImageDataset,
    *,
    freeze_stages: int = 0,
    epochs: int | None = None,
    steps: int | None = None,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    augment: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> FinetuneResult:
    """Train a copy of `backbone` plus a linear head on `train`; report accuracy on `test`.

    AdamW with a linear warm-up (5%) and cosine decay; light_augment on every batch when
    `augment`. The first `freeze_stages` stages keep their weights and BN statistics. With
    neither `epochs` nor `steps` the budget is `default_epochs(len(train))`, kept within
    100 to 3000 steps. The caller's backbone is never modified.
    """
    num_classes = _num_classes(train, test)
    batch_size = max(1, min(batch_size, len(train)))
    steps_per_epoch = max(1, len(train) // batch_size)
    if steps is None:
        steps = steps_per_epoch * (epochs or default_epochs(len(train)))
        if epochs is None:
            steps = min(max(steps, MIN_DEFAULT_STEPS), MAX_DEFAULT_STEPS)
    if steps < 1:
        raise SelfSupError(f"fine-tuning needs at least one step, got steps={steps}")
    device = torch.device(device)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model_backbone = copy.deepcopy(backbone).requires_grad_(True)
        head = nn.Linear(int(backbone.feature_dim), num_classes)
        model = nn.Sequential(model_backbone, head).to(device)
        frozen = _freeze(model_backbone, freeze_stages)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay)
        warmup = max(1, steps // 20)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda s: (
                min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
            ),
        )
        generator = torch.Generator().manual_seed(seed)
        # A CPU generator gives the same augmentations whatever the device.
        aug_generator = torch.Generator().manual_seed(seed + 1)
        if augment:
            from selfsup.augment import light_augment
        model.train()
        for stage in frozen:
            stage.eval()  # frozen BN layers keep their pretrained running statistics
        for images, labels in islice(_train_batches(train, batch_size, generator), steps):
            x = images.to(device, non_blocking=True).float().div_(255)
            if augment:
                x = light_augment(x, generator=aug_generator)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = nn.functional.cross_entropy(model(x).float(), labels.to(device))
            if not torch.isfinite(loss):
                raise SelfSupError(
                    f"fine-tuning loss became {loss.item()}; lower the learning rate (lr={lr})"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        accuracy = _test_accuracy(model, test, device)
    return FinetuneResult(model_backbone, head, accuracy, steps)


def finetune_accuracy(
    backbone: nn.Module, train: ImageDataset, test: ImageDataset, **options
) -> float:
    """Test accuracy after fine-tuning a copy of `backbone`; options as in `finetune`."""
    return finetune(backbone, train, test, **options).accuracy


def supervised_from_scratch_accuracy(
    backbone_config: dict, train: ImageDataset, test: ImageDataset, **options
) -> float:
    """The "no pretraining" baseline: `finetune` from a freshly built, randomly initialised
    backbone of the same architecture (same budget, optimiser and augmentation)."""
    from selfsup.backbones import build_backbone

    seed = int(options.get("seed", 0))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = build_backbone(**backbone_config)
    # Frozen random stages would be a random-features baseline, not training from scratch.
    options["freeze_stages"] = 0
    return finetune(fresh, train, test, **options).accuracy
