"""MoCo: the EMA update, the key queue, shuffle-BN, DDP equality with one process, resume."""

from __future__ import annotations

import signal

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from conftest import run_gloo_ranks
from torch import nn

from selfsup.backbones import build_backbone
from selfsup.data import load_images
from selfsup.engine import CHECKPOINT, load_checkpoint
from selfsup.errors import SelfSupError
from selfsup.losses import queue_info_nce
from selfsup.recipe import Recipe, load_run
from selfsup.runs import pretrain_run
from selfsup.tasks.moco import KeyQueue, MoCo, shuffled_keys
from selfsup.tasks.momentum import MomentumEncoder


class TinyNet(nn.Module):
    """A backbone without BatchNorm: every output depends on its own input only."""

    feature_dim = 6

    def __init__(self, pixels: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(pixels, 6), nn.Tanh())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class FixedViews:
    """Deterministic 'augmentation': the query view is the image, the key view its mirror."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return images if self.calls % 2 else images.flip(-1)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_ema_update_matches_its_formula_and_the_target_gets_no_gradient():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    target = MomentumEncoder(online)
    assert all(not p.requires_grad for p in target.parameters())
    before = [p.clone() for p in target.parameters()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    target.update(0.9, online)
    for t, b, o in zip(target.parameters(), before, online.parameters(), strict=True):
        assert torch.allclose(t, 0.9 * b + 0.1 * o, atol=1e-6)

    out = target(torch.randn(5, 4))
    assert out.grad_fn is None and not out.requires_grad
    loss = (online(torch.randn(5, 4)) * out).sum()
    loss.backward()
    assert all(p.grad is None for p in target.parameters())
    assert all(p.grad is not None for p in online.parameters())
    with pytest.raises(ValueError, match="same modules"):
        target.update(0.9, nn.Linear(4, 3))


def test_queue_is_fifo_with_wrap_around():
    queue = KeyQueue(5, 2)
    a, b, c = (torch.full((n, 2), float(v)) for n, v in ((3, 1), (3, 2), (7, 3)))
    a[:, 1] = torch.arange(3)
    b[:, 1] = torch.arange(3)
    queue.enqueue(a)
    assert int(queue.pointer) == 3 and torch.equal(queue.keys[:3], a)
    queue.enqueue(b)  # wraps: slots 3, 4, then 0
    assert int(queue.pointer) == 1
    assert torch.equal(queue.ordered(), torch.cat([a[1:], b]))  # the oldest key went first
    c[:, 1] = torch.arange(7)
    queue.enqueue(c)  # more keys than slots: only the newest 5 stay, still in order
    assert torch.equal(queue.ordered(), c[2:])


def test_queue_remembers_each_keys_image_and_loads_checkpoints_without_them():
    queue = KeyQueue(4, 2)
    assert torch.equal(queue.owners, torch.full((4,), -1))
    queue.enqueue(torch.ones(3, 2), torch.tensor([7, 8, 9]))
    queue.enqueue(torch.ones(2, 2), torch.tensor([1, 2]))  # wraps: slot 3, then slot 0
    assert torch.equal(queue.owners, torch.tensor([2, 8, 9, 1]))
    queue.enqueue(torch.ones(1, 2))  # no indices given: owner unknown
    assert int(queue.owners[1]) == -1
    old = {k: v for k, v in queue.state_dict().items() if k != "owners"}
    fresh = KeyQueue(4, 2)
    fresh.load_state_dict(old)  # a checkpoint from before the owners were kept
    assert torch.equal(fresh.keys, queue.keys) and torch.equal(fresh.owners, torch.full((4,), -1))


def test_a_querys_older_keys_of_its_own_image_are_not_its_negatives():
    torch.manual_seed(0)
    query, key, queue = torch.randn(3, 4), torch.randn(3, 4), torch.randn(5, 4)
    exclude = torch.zeros(3, 5, dtype=torch.bool)
    exclude[0, 2] = exclude[2, [0, 4]] = True
    loss, _ = queue_info_nce(query, key, queue, 0.2, exclude=exclude)
    rows = [queue_info_nce(query[i : i + 1], key[i : i + 1], queue[~exclude[i]], 0.2)[0]
            for i in range(3)]  # fmt: skip
    assert torch.allclose(loss, torch.stack(rows).mean(), atol=1e-6)
    # A stale key identical to the positive would otherwise cost log 2 at a high similarity.
    same = queue_info_nce(key[:1], key[:1], key[:1], 0.2)[0]
    assert float(same) > 0.69
    masked = queue_info_nce(key[:1], key[:1], key[:1], 0.2, exclude=torch.ones(1, 1).bool())[0]
    assert float(masked) == 0.0

    task, images = _make_problem()
    task.queue.owners[5:8] = torch.tensor([0, 1, 1])  # older keys of images 0 and 1
    out = task({"images": images, "indices": torch.arange(8)})
    task2, _ = _make_problem()
    query2 = task2.head(task2.encode(task2.augment(images)))
    key2 = task2.key_encoder(images.flip(-1))
    own = torch.zeros(8, 24, dtype=torch.bool)
    own[0, 5] = own[1, 6] = own[1, 7] = True
    own[2, 10] = own[5, 11] = own[5, 12] = True  # those _make_problem queued
    expected = queue_info_nce(query2, key2, task2.queue.keys, task2.temperature, exclude=own)[0]
    assert torch.allclose(out["loss"], expected, atol=1e-6)
    assert torch.equal(task.queue.owners[[20, 21, 22, 23, 0, 1, 2, 3]], torch.arange(8))


def test_queue_is_capped_at_the_dataset_size_and_bad_options_are_clear():
    task = MoCo(TinyNet(), (1, 8, 8), queue_size=4096, dataset_size=100)
    assert task.queue.keys.shape == (100, 128)
    with pytest.raises(SelfSupError, match="queue_size"):
        MoCo(TinyNet(), (1, 8, 8), queue_size=0)


def test_shuffle_bn_on_one_device_keeps_keys_aligned_and_splits_bn_batches():
    torch.manual_seed(0)
    views = torch.randn(8, 1, 8, 8)
    plain = MomentumEncoder(TinyNet())
    keys, all_keys = shuffled_keys(plain, views, splits=2)
    assert torch.allclose(keys, plain(views), atol=1e-6) and keys is all_keys

    with_bn = MomentumEncoder(nn.Flatten(), nn.BatchNorm1d(64))
    torch.manual_seed(1)
    split = shuffled_keys(with_bn, views, splits=2)[0]
    # Sub-batches have their own statistics, so keys differ from one whole-batch BN...
    assert not torch.allclose(split, with_bn(views), atol=1e-3)
    # ...and equal BN over the two shuffled halves, unshuffled.
    torch.manual_seed(1)
    perm = torch.randperm(8)
    expected = torch.empty(8, 64)
    expected[perm] = torch.cat([with_bn(h) for h in views[perm].chunk(2)])
    assert torch.allclose(split, expected, atol=1e-5)


def _make_problem() -> tuple[MoCo, torch.Tensor]:
    torch.manual_seed(0)
    task = MoCo(
        TinyNet(), (1, 8, 8), projection_dim=4, hidden_dim=8, queue_size=24, augment=FixedViews()
    )
    task.queue.pointer.fill_(20)  # the 8 new keys wrap around the end of the queue
    task.queue.owners[10:13] = torch.tensor([2, 5, 5])  # older keys of images 2 and 5
    return task, torch.rand(8, 1, 8, 8)


def _single_process() -> dict:
    task, images = _make_problem()
    loss = task({"images": images, "indices": torch.arange(8)})["loss"]
    loss.backward()
    expected_keys = F.normalize(task.key_encoder(images.flip(-1)), dim=1)
    return {
        "loss": loss.detach(),
        "grads": [p.grad.clone() for p in task.parameters() if p.requires_grad],
        "queue": task.queue.keys.clone(),
        "owners": task.queue.owners.clone(),
        "pointer": task.queue.pointer.clone(),
        "keys": expected_keys,
    }


def _rank_worker(rank: int, world: int) -> dict:
    task, images = _make_problem()
    ddp = nn.parallel.DistributedDataParallel(task)  # as Fabric wraps the task
    part = images[rank * 4 : (rank + 1) * 4]
    loss = ddp({"images": part, "indices": torch.arange(rank * 4, (rank + 1) * 4)})["loss"]
    loss.backward()  # DDP averages the gradients across ranks
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)

    # Shuffle-BN across ranks hands every key back to its own image, in rank order.
    flat = MomentumEncoder(nn.Flatten())
    local_keys, all_keys = shuffled_keys(flat, part)
    return {
        "loss": mean_loss / world,
        "grads": [p.grad for p in task.parameters() if p.requires_grad],
        "queue": task.queue.keys,
        "owners": task.queue.owners,
        "pointer": task.queue.pointer,
        "shuffle_ok": torch.equal(local_keys, part.flatten(1))
        and torch.equal(all_keys, images.flatten(1)),
    }


def test_two_gloo_processes_equal_one_process_loss_gradients_and_queue(tmp_path):
    expected = _single_process()
    initial = _make_problem()[0].queue.keys
    for got in run_gloo_ranks(_rank_worker, tmp_path):
        assert torch.allclose(got["loss"], expected["loss"], atol=1e-6)
        for g, e in zip(got["grads"], expected["grads"], strict=True):
            assert torch.allclose(g, e, atol=1e-6), (g - e).abs().max()
        assert got["shuffle_ok"]
        # Slots 20-23 then 0-3 hold rank 0's 4 keys then rank 1's: no duplicates, none lost,
        # the other 16 slots untouched, and the same queue as one process on the whole batch.
        slots = torch.tensor([20, 21, 22, 23, 0, 1, 2, 3])
        assert torch.allclose(got["queue"][slots], expected["keys"], atol=1e-6)
        assert torch.equal(got["queue"][4:20], initial[4:20])
        assert torch.allclose(got["queue"], expected["queue"], atol=1e-6)
        assert int(got["pointer"]) == int(expected["pointer"]) == 4
        assert torch.equal(got["owners"], expected["owners"])  # each key's image, in rank order


@pytest.mark.parametrize("source", ["digits", "cifar10"])
def test_a_training_step_gives_a_finite_loss_on_1_and_3_channels(source, shared_data):
    if source == "digits":
        images = load_images("digits", "train").images[:16]
    else:
        images = load_images("cifar10:" + str(shared_data / "cifar10"), "test").images[:16]
    channels, size = images.shape[1], images.shape[2]
    torch.manual_seed(0)
    backbone = build_backbone("small_cnn", in_channels=channels, image_size=size, width=8)
    task = MoCo(backbone, (channels, size, size), queue_size=32)
    logs = task({"images": images.float() / 255})
    logs["loss"].backward()
    assert torch.isfinite(logs["loss"]) and 0 <= float(logs["accuracy"]) <= 1
    before = [p.clone() for p in task.key_encoder.parameters()]
    task.after_optimizer_step(0, 10)  # no optimizer step: the EMA leaves the copy unchanged
    assert all(
        torch.allclose(a, b) for a, b in zip(before, task.key_encoder.parameters(), strict=True)
    )
    assert int(task.queue.pointer) == 16


def _recipe(steps: int) -> Recipe:
    return Recipe(
        task="moco",
        task_options={"queue_size": 40},  # 16 keys a step: the queue wraps during the run
        backbone="small_cnn",
        backbone_options={"width": 8},
        data="digits",
        train={
            "steps": steps,
            "batch_size": 16,
            "log_every": 1,
            "checkpoint_every": 3,
            "num_workers": 0,
        },
    )


def test_queue_and_key_encoder_survive_checkpoint_and_resume(tmp_path, monkeypatch):
    pretrain_run(_recipe(8), tmp_path / "straight", progress=False)
    original = MoCo.after_optimizer_step

    def interrupt_at_5(self, step, total):
        original(self, step, total)
        if step == 4:  # Ctrl-C during the 5th step: the run stops after it
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(MoCo, "after_optimizer_step", interrupt_at_5)
    with pytest.raises(SelfSupError, match="--resume"):
        pretrain_run(_recipe(8), tmp_path / "resumed", progress=False)
    monkeypatch.setattr(MoCo, "after_optimizer_step", original)
    assert int(load_checkpoint(tmp_path / "resumed" / CHECKPOINT)["step"]) == 5
    pretrain_run(load_run(tmp_path / "resumed"), tmp_path / "resumed", resume=True, progress=False)

    straight = load_checkpoint(tmp_path / "straight" / CHECKPOINT)["task"]
    resumed = load_checkpoint(tmp_path / "resumed" / CHECKPOINT)["task"]
    assert straight.keys() == resumed.keys()
    assert {"queue.keys", "queue.pointer"} <= straight.keys()
    assert any(k.startswith("key_encoder.") for k in straight)
    assert int(straight["queue.pointer"]) == 8 * 16 % 40
    for key in straight:
        assert torch.allclose(straight[key].float(), resumed[key].float(), atol=1e-6), key
