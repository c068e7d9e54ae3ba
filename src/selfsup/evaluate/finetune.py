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
from selfsup.evaluate.features import StepProgress, iterate_batches

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


def first_stages(backbone: nn.Module, count: int) -> list[nn.Module]:
    """The first `count` stages of `backbone`, or a clear error if it has no such stages."""
    if count <= 0:
        return []
    if not hasattr(backbone, "stages"):
        raise SelfSupError(
            "freeze_stages needs a backbone with .stages(); use a selfsup backbone or "
            "freeze_stages=0"
        )
    stages = list(backbone.stages())
    if count > len(stages):
        raise SelfSupError(
            f"freeze_stages={count} but the backbone has only {len(stages)} stages; "
            f"use a value from 0 to {len(stages)}"
        )
    return stages[:count]


def freeze_first_stages(backbone: nn.Module, freeze_stages: int) -> list[nn.Module]:
    """Stop the gradient to the first `freeze_stages` stages of `backbone` and put them in eval
    mode, so their BatchNorm statistics stay as they were; returns them. Call it after the
    model's train(), which would switch them back."""
    frozen = first_stages(backbone, freeze_stages)
    for stage in frozen:
        stage.requires_grad_(False).eval()
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


def conv_bn_pairs(backbone: nn.Module, image_shape: tuple[int, ...]) -> list[tuple[str, str]]:
    """Names of each convolution whose output goes straight into a batch norm (a pooling in
    between is fine), found from the order in which they run on a dummy batch."""
    calls: list[nn.Module] = []
    layers = [m for m in backbone.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    hooks = [m.register_forward_hook(lambda m, *_: calls.append(m)) for m in layers]
    training = backbone.training
    try:
        backbone.eval()  # the dummy batch must not touch BatchNorm statistics
        device = next(backbone.parameters()).device
        with torch.no_grad():
            backbone(torch.zeros(2, *image_shape, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        backbone.train(training)
    names = {m: name for name, m in backbone.named_modules()}
    return [
        (names[conv], names[bn])
        for conv, bn in zip(calls[:-1], calls[1:], strict=True)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
    ]


@torch.no_grad()
def conv_growth(
    backbone: nn.Module, image_shape: tuple[int, ...], seed: int = 0
) -> list[tuple[str, str, float]]:
    """For each convolution that feeds a batch norm: (its name, the batch norm's name, its
    weight norm / that of the same convolution in a freshly built network (same config,
    `seed`)): how much pretraining grew it."""
    from selfsup.evaluate.baselines import random_init_backbone

    if not hasattr(backbone, "config"):
        raise SelfSupError(
            "rescale needs a selfsup backbone (one with .config), to build a fresh twin of it"
        )
    pairs = conv_bn_pairs(backbone, image_shape)
    if not pairs:
        raise SelfSupError(
            "rescale found no convolution followed by batch norm in this backbone; it is for "
            "CNN backbones (small_cnn, resnet18, resnet50): leave rescale off"
        )
    fresh = random_init_backbone(backbone, seed)
    return [
        (conv, bn, float(backbone.get_submodule(conv).weight.norm()
                         / fresh.get_submodule(conv).weight.norm()))
        for conv, bn in pairs
    ]  # fmt: skip


@torch.no_grad()
def rescale_to_fresh(
    backbone: nn.Module, image_shape: tuple[int, ...], seed: int = 0
) -> list[float]:
    """Scale (in place) each convolution that feeds a batch norm to the weight norm of the same
    convolution in a freshly built network (same config, `seed`), and that batch norm's running
    statistics with it; returns how much each had grown (conv_growth).

    The function does not change: batch norm undoes a convolution's scale. Fine-tuning does:
    pretraining with Adam grows the weights, Adam's steps are about the same size whatever the
    weights' scale, so a grown network moves less relative to its weights than a fresh one.
    Krähenbühl et al. 2016 (Data-dependent Initializations of CNNs) rescale pretrained networks
    before fine-tuning for this reason.
    """
    growth = conv_growth(backbone, image_shape, seed)
    for conv_name, bn_name, factor in growth:
        conv, bn = backbone.get_submodule(conv_name), backbone.get_submodule(bn_name)
        scale = 1.0 / factor
        conv.weight.mul_(scale)
        if conv.bias is not None:
            conv.bias.mul_(scale)
        bn.running_mean.mul_(scale)
        bn.running_var.mul_(scale**2)
    return [factor for *_, factor in growth]


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
    rescale: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: str | None = None,
) -> FinetuneResult:
    """Train a copy of `backbone` plus a linear head on `train`; report accuracy on `test`.

    AdamW with a linear warm-up (5%) and cosine decay; light_augment on every batch when
    `augment`. The first `freeze_stages` stages keep their weights and BN statistics. With
    neither `epochs` nor `steps` the budget is `default_epochs(len(train))`, kept within
    100 to 3000 steps. `rescale`: first scale the convolutions back to a fresh network's
    weight norms (rescale_to_fresh; the function is unchanged). The caller's backbone is never
    modified. `progress`: a label to show the steps under (StepProgress); None: quiet.
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
        if rescale:
            rescale_to_fresh(model_backbone, train.image_shape, seed)
        head = nn.Linear(int(backbone.feature_dim), num_classes)
        model = nn.Sequential(model_backbone, head).to(device).train()
        freeze_first_stages(model_backbone, freeze_stages)
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
        batches = islice(_train_batches(train, batch_size, generator), steps)
        with StepProgress(progress, steps) as bar:
            for step, (images, labels) in enumerate(batches, 1):
                x = images.to(device, non_blocking=True).float().div_(255)
                if augment:
                    x = light_augment(x, generator=aug_generator)
                autocast = device.type == "cuda"
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    loss = nn.functional.cross_entropy(model(x).float(), labels.to(device))
                if not torch.isfinite(loss):
                    raise SelfSupError(
                        f"fine-tuning loss became {loss.item()}; lower the learning rate (lr={lr})"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update(step)
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
    # Frozen random stages would be a random-features baseline, not training from scratch;
    # a fresh network has nothing to rescale.
    options["freeze_stages"], options["rescale"] = 0, False
    return finetune(fresh, train, test, **options).accuracy
