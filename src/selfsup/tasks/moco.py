"""MoCo v2: Momentum Contrast with an MLP head and stronger augmentation.

He, Fan, Wu, Xie, Girshick, CVPR 2020, https://arxiv.org/abs/1911.05722, and Chen, Fan,
Girshick, He 2020, "Improved Baselines with Momentum Contrastive Learning",
https://arxiv.org/abs/2003.04297

Free labels: a query view of each image must pick its own key (another view, encoded by a
momentum copy of the network) out of a FIFO queue of K keys from earlier batches. The queue
decouples the number of negatives from the batch size; the slowly moving key encoder keeps the
queued keys consistent with each other.

Momentum: 0.99 by default, not the paper's 0.999. An EMA averages over about 1 / (1 - m)
steps: 1,000 steps at 0.999 is a small part of an ImageNet run (>100k steps) but half of our
~2,000-step CPU runs, so the key encoder would still be close to its random initialisation for
most of training. At 0.99 it trails by ~100 steps, still slow next to the ~16 steps a key spends
in a 4,096-key queue at batch 256.

Own keys: the queue remembers which image each key came from, and a query's older keys of its
own image are left out of its negatives. On a data set the size of the queue, about half the
queries would otherwise be pushed away from an earlier view of themselves.

Shuffle-BN: BatchNorm in the key encoder would let a query find its key through batch
statistics (the query and key batches hold the same images) rather than through content.
Under DDP the key batch is gathered, shuffled across ranks with one shared permutation,
encoded, and unshuffled, as in the official code. On one device there is nothing to shuffle
across, so the key batch is shuffled and encoded in `key_bn_splits` sub-batches, each with its
own BN statistics: the same effect as the official code on that many GPUs, without SyncBN.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from selfsup.augment import simclr_augment, views_from
from selfsup.errors import SelfSupError
from selfsup.losses import gather_with_grad, queue_info_nce
from selfsup.tasks.base import Batch, Task, require_positive
from selfsup.tasks.momentum import MomentumEncoder


def moco_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """MoCo v2's MLP head: fc-ReLU-fc, no BatchNorm (unlike SimCLR's)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)
    )


class KeyQueue(nn.Module):
    """A FIFO queue of K unit-norm keys and the dataset index of the image each came from;
    buffers, so both are saved in the task's checkpoint.

    Starts from random unit vectors, as in the official code (they act as easy negatives until
    the first K keys have pushed them out); their owner, like that of any key whose image is
    not known, is -1.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("owners", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))  # next slot to write

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, owners: torch.Tensor | None = None) -> None:
        """Write `keys` (and their images' indices) over the oldest entries, wrapping around;
        only the newest K are kept."""
        size, count = self.keys.shape[0], keys.shape[0]
        if owners is None:
            owners = torch.full((count,), -1, dtype=torch.long, device=keys.device)
        slots = (self.pointer + torch.arange(count, device=keys.device)) % size
        if count > size:
            slots, keys, owners = slots[-size:], keys[-size:], owners[-size:]
        self.keys[slots] = keys.detach().to(self.keys.dtype)
        self.owners[slots] = owners.to(self.owners.dtype)
        self.pointer.copy_((self.pointer + count) % size)

    def _load_from_state_dict(self, state_dict, prefix, *args) -> None:
        # A checkpoint from before the owners were kept: no queued key is known to be whose.
        state_dict.setdefault(prefix + "owners", torch.full_like(self.owners, -1))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def ordered(self) -> torch.Tensor:
        """The keys from oldest to newest (meaningful once the queue has filled once)."""
        return torch.roll(self.keys, -int(self.pointer), dims=0)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def shuffled_keys(
    encoder: MomentumEncoder, views: torch.Tensor, splits: int = 1, channels_last: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys of `views` with shuffle-BN: (this rank's keys (B, D), all ranks' keys in rank order).

    Under DDP the global key batch is permuted across ranks (one permutation, broadcast from
    rank 0), each rank encodes its share, and the result is gathered and unshuffled. On one
    device the batch is permuted and encoded in `splits` sub-batches.
    """
    # One permutation draw on every rank, so the global RNG stays in step for --resume.
    if _distributed():
        rank, world, local = dist.get_rank(), dist.get_world_size(), views.shape[0]
        everything = gather_with_grad(views)
        perm = torch.randperm(everything.shape[0], device=views.device)
        dist.broadcast(perm, src=0)
        mine = everything[perm.view(world, local)[rank]]
        encoded = gather_with_grad(encoder(mine, channels_last))
        keys = torch.empty_like(encoded)
        keys[perm] = encoded
        return keys[rank * local : (rank + 1) * local], keys
    perm = torch.randperm(views.shape[0], device=views.device)
    # Keep at least 2 samples per sub-batch: BatchNorm1d cannot normalise a single one.
    chunks = torch.tensor_split(views[perm], max(1, min(splits, views.shape[0] // 2)))
    encoded = torch.cat([encoder(chunk, channels_last) for chunk in chunks])
    keys = torch.empty_like(encoded)
    keys[perm] = encoded
    return keys, keys


class MoCo(Task):
    name = "moco"

    def __init__(
        self,
        backbone: nn.Module,
        image_shape: tuple[int, int, int],
        *,
        projection_dim: int = 128,
        hidden_dim: int | None = None,
        temperature: float = 0.2,
        queue_size: int = 4096,
        momentum: float = 0.99,
        key_bn_splits: int = 2,
        augment: Callable[[torch.Tensor], torch.Tensor] | Mapping | None = None,
        dataset_size: int | None = None,
    ) -> None:
        super().__init__(backbone)
        require_positive(self.name, temperature=temperature)
        if queue_size < 1 or key_bn_splits < 1 or not 0.0 <= momentum <= 1.0:
            raise SelfSupError(
                f"moco needs queue_size >= 1, key_bn_splits >= 1 and 0 <= momentum <= 1, got "
                f"{queue_size}, {key_bn_splits}, {momentum}; fix task_options"
            )
        channels, height, _ = image_shape
        self.augment = views_from(augment, simclr_augment(height, channels))
        self.temperature, self.momentum, self.key_bn_splits = temperature, momentum, key_bn_splits
        feature_dim = backbone.feature_dim
        self.head = moco_head(feature_dim, hidden_dim or feature_dim, projection_dim)
        self.key_encoder = MomentumEncoder(backbone, self.head)
        # More keys than images would only repeat older keys of the same images.
        if dataset_size:
            queue_size = min(queue_size, dataset_size)
        self.queue = KeyQueue(queue_size, projection_dim)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = batch["images"]
        query = self.head(self.encode(self.augment(images)))
        key, all_keys = shuffled_keys(
            self.key_encoder, self.augment(images), self.key_bn_splits, self.channels_last
        )
        indices = batch.get("indices")
        # A key of the query's own image from an earlier epoch is another view of it, not a
        # negative. Where the queue holds about an epoch (data sets not much bigger than it),
        # about half the queries would have one.
        own = None if indices is None else indices[:, None] == self.queue.owners[None, :]
        # A copy: the enqueue below must not change what this step's loss was computed with.
        loss, accuracy = queue_info_nce(
            query, key, self.queue.keys.clone(), self.temperature, exclude=own
        )
        all_indices = None if indices is None else gather_with_grad(indices)
        self.queue.enqueue(F.normalize(all_keys.float(), dim=1), all_indices)
        return {"loss": loss, "accuracy": accuracy}

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        self.key_encoder.update(self.momentum, self.backbone, self.head)

    @torch.no_grad()
    def show(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        images = images[:8]  # the report's grids are 8 wide: one row per kind of picture
        views = torch.cat([images, self.augment(images), self.augment(images)])
        return {"MoCo, rows: image, query view, key view": views}
