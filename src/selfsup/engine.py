"""The one training loop every pretext task runs in, on Lightning Fabric.

Fabric gives devices, precision and DDP; this file keeps the loop itself readable: batches are
indexed straight out of in-memory tensors (or read by DataLoader workers for lazy sources),
moved to the device as uint8, augmented there by the task, and the step is reproducible from
(seed, step) alone, so `--resume` continues exactly where a killed run stopped.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from selfsup.data.base import BatchDataset, ImageDataset, TensorImageDataset
from selfsup.errors import DataError, Interrupted, SelfSupError
from selfsup.optim import OPTIMIZERS, make_optimizer, warmup_cosine
from selfsup.tasks.base import Task

PRECISIONS = ("32", "bf16-mixed", "16-mixed")
ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps")
CHECKPOINT = "checkpoints/last.pt"


def kept_checkpoint(step: int) -> str:
    """Where `keep_every` keeps the checkpoint of `step`, relative to the run directory."""
    return f"checkpoints/step_{step:07d}.pt"


@dataclass
class TrainConfig:
    """How to train; every field is a CLI flag and a recipe key."""

    steps: int = 1000
    batch_size: int = 256  # per device
    optimizer: str = "adamw"
    lr: float | None = None  # None: the optimizer's default (selfsup.optim.DEFAULT_LR)
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd / lars momentum; adamw's beta1
    warmup_steps: int | None = None  # None: 5% of steps
    precision: str = "32"
    accelerator: str = "auto"  # "cpu", "cuda", "auto"
    devices: int = 1
    num_nodes: int = 1
    checkpoint_every: int = 500
    keep_every: int = 0  # >0: also keep checkpoints/step_N.pt every N steps (N a checkpoint step)
    log_every: int = 10
    seed: int = 0
    num_workers: int = 2  # only for lazily loaded sources (image folders)
    channels_last: bool | None = None  # None: on for CUDA, off for CPU

    def __post_init__(self) -> None:
        from selfsup.recipe import check_value

        for f in fields(self):
            if f.name != "precision":  # YAML reads `precision: 32` as a number
                check_value(f"train.{f.name}", getattr(self, f.name), f.type)
        if self.optimizer not in OPTIMIZERS:
            raise SelfSupError(
                f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}"
            )
        if str(self.precision) not in PRECISIONS:
            raise SelfSupError(
                f"unknown precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}"
            )
        self.precision = str(self.precision)
        for name in (
            "steps",
            "batch_size",
            "devices",
            "num_nodes",
            "checkpoint_every",
            "log_every",
        ):
            if int(getattr(self, name)) < 1:
                raise SelfSupError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.keep_every < 0 or (self.keep_every and self.keep_every % self.checkpoint_every):
            raise SelfSupError(
                f"keep_every must be 0 (off) or a multiple of checkpoint_every "
                f"({self.checkpoint_every}), got {self.keep_every}"
            )
        if not 0.0 <= float(self.momentum) < 1.0:
            raise SelfSupError(f"momentum must be in [0, 1), got {self.momentum}")
        if int(self.batch_size) < 2:
            raise SelfSupError(
                f"batch_size must be at least 2, got {self.batch_size}: batch norm and the "
                "contrastive losses compare the samples of a batch"
            )
        if self.lr is not None and not float(self.lr) > 0.0:  # also refuses NaN
            raise SelfSupError(f"lr must be a positive number, got {self.lr}")
        if not float(self.weight_decay) >= 0.0:
            raise SelfSupError(f"weight_decay must be 0 or more, got {self.weight_decay}")
        if self.warmup_steps is not None and int(self.warmup_steps) < 0:
            raise SelfSupError(f"warmup_steps must be 0 or more, got {self.warmup_steps}")
        if self.warmup_steps is not None and self.warmup_steps > self.steps:
            raise SelfSupError(
                f"warmup_steps ({self.warmup_steps}) is more than steps ({self.steps}): the "
                "learning rate would never reach its peak; lower warmup_steps"
            )
        if self.num_workers < 0:
            raise SelfSupError(
                f"num_workers must be 0 (load in this process) or more, got {self.num_workers}"
            )
        if self.accelerator not in ACCELERATORS:
            raise SelfSupError(
                f"unknown accelerator {self.accelerator!r}; choose one of: "
                f"{', '.join(ACCELERATORS)}"
            )
        # Lightning's "gpu" is also Apple's MPS; "cuda" is CUDA only.
        mps = self.accelerator == "gpu" and torch.backends.mps.is_available()
        if self.accelerator in ("cuda", "gpu") and not torch.cuda.is_available() and not mps:
            raise SelfSupError(
                f"accelerator {self.accelerator}, but no CUDA GPU is visible; drop the "
                "accelerator setting (auto trains on the CPU here) or use --accelerator cpu"
            )
        if self.accelerator == "mps" and not torch.backends.mps.is_available():
            raise SelfSupError(
                "accelerator mps, but Apple's MPS is not available here; drop the accelerator "
                "setting or use --accelerator cpu"
            )

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SelfSupError(
                f"unknown training option(s) {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(known))}"
            )
        return cls(**values)


class BatchOrder:
    """Which dataset indices form batch `step` on this rank: a pure function of (seed, step).

    Each epoch is a fresh seeded permutation split across ranks; incomplete batches are dropped
    so every step has the same shape (BatchNorm and the contrastive losses want that).
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        unit: str = "images",
    ) -> None:
        self.per_rank = size // world
        self.steps_per_epoch = self.per_rank // batch_size
        if self.steps_per_epoch < 1:
            raise SelfSupError(
                f"the dataset has {size} {unit}, fewer than one batch of {batch_size} on each of "
                f"{world} device(s); lower --batch-size"
            )
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self._epoch, self._mine = -1, torch.empty(0, dtype=torch.long)
        self.size = size

    def indices(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            perm = torch.randperm(self.size, generator=generator)
            self._epoch, self._mine = epoch, perm[self.rank :: self.world][: self.per_rank]
        return self._mine[i * self.batch_size : (i + 1) * self.batch_size]


def _seed_step(seed: int, step: int, rank: int) -> None:
    """Augmentation and dropout randomness depends only on (seed, step, rank): exact resume."""
    torch.manual_seed((seed * 1_000_003 + step) * 64 + rank)


def _batches(
    dataset: ImageDataset | BatchDataset,
    order: BatchOrder,
    start: int,
    stop: int,
    device: torch.device,
    num_workers: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """uint8 image batches and their indices for steps start..stop-1, already on `device`.

    A BatchDataset yields (None, indices): its batch is built after the step's seed is set,
    so the randomness inside get_batch (e.g. NSP's random sentences) is reproducible too.
    """
    if isinstance(dataset, BatchDataset):
        for step in range(start, stop):
            yield None, order.indices(step)
        return
    if isinstance(dataset, TensorImageDataset):
        # The whole uint8 dataset on the device (CIFAR-10 is 150 MB): no per-step copies.
        images = dataset.images.to(device)
        for step in range(start, stop):
            idx = order.indices(step)
            yield images[idx.to(device)], idx
        return
    step = start
    while step < stop:
        # One DataLoader per epoch (or the rest of one): workers decode while the model trains.
        end = min(stop, (step // order.steps_per_epoch + 1) * order.steps_per_epoch)
        index_batches = [order.indices(s).tolist() for s in range(step, end)]
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=index_batches,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
        )
        try:
            for (images, _), idx in zip(loader, index_batches, strict=True):
                yield images.to(device, non_blocking=True), torch.tensor(idx)
        except DataError as error:
            raise DataError(_worker_message(error)) from None
        step = end


def _worker_message(error: Exception) -> str:
    """The message an error had in its DataLoader worker, without the worker's traceback."""
    message = str(error)
    if "Original Traceback" not in message:
        return message
    last = message.rstrip().splitlines()[-1]  # "selfsup.errors.DataError: <message>"
    return last.split(": ", 1)[1] if ": " in last else last


def _atomic_torch_save(obj: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        # On disk before the rename: after a power cut the new name must not point at a
        # file whose data was still in the page cache.
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _keep_checkpoint(out_dir: Path, step: int) -> None:
    """Copy last.pt to checkpoints/step_N.pt (a copy, not a link: the next save replaces
    last.pt by renaming over it). Through a temporary name, as last.pt is: a run killed
    mid-copy would otherwise leave a truncated step_N.pt that nothing ever rewrites."""
    kept = out_dir / kept_checkpoint(step)
    tmp = kept.with_name(kept.name + ".tmp")
    shutil.copyfile(out_dir / CHECKPOINT, tmp)
    os.replace(tmp, kept)


# The settings that decide a run's numbers: a resumed run must keep the ones its checkpoint
# was saved with (num_workers and accelerator may change, as --resume allows).
RESUME_FIXED = (
    "steps",
    "batch_size",
    "optimizer",
    "lr",
    "weight_decay",
    "momentum",
    "warmup_steps",
    "precision",
    "devices",
    "num_nodes",
    "seed",
)


def check_resumable(run_dir: Path, config: TrainConfig) -> None:
    """Refuse, before any data is read, to resume a run that has no checkpoint or whose
    settings (its run.yaml, edited or emptied by a crash) differ from its checkpoint's, which
    would otherwise go on silently with other steps, batches or schedule."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise SelfSupError(
            f"{run_dir} has no checkpoint to resume ({CHECKPOINT}): its pretraining stopped "
            f"before the first one; start it again with `selfsup pretrain --recipe "
            f"{run_dir / 'run.yaml'} --out {run_dir}`"
        )
    recorded = load_checkpoint(path).get("config") or {}
    differ = [n for n in RESUME_FIXED if n in recorded and recorded[n] != getattr(config, n)]
    if differ:
        was = ", ".join(f"{name}={recorded[name]}" for name in differ)
        now = ", ".join(f"{name}={getattr(config, name)}" for name in differ)
        raise SelfSupError(
            f"{path} was saved with {was}, but the run's settings now say {now}; --resume "
            f"continues a run as it began: put those values back in {run_dir / 'run.yaml'}, "
            "or start a new run with --out"
        )


def _rng_states() -> dict:
    # Tensors, ints and tuples only, so the checkpoint loads with weights_only=True.
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def load_checkpoint(path: Path) -> dict:
    """Read a training checkpoint safely (no unpickling of arbitrary objects)."""
    if not path.is_file():
        raise SelfSupError(f"no checkpoint at {path}; start a new run without --resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure means the same to the user
        raise SelfSupError(
            f"checkpoint {path} is unreadable ({type(error).__name__}); delete it to restart "
            "from scratch, or copy a kept checkpoints/step_N.pt over it to go on from there"
        ) from error


class _StopRequest:
    """Ctrl-C or SIGTERM (preemption) asks the loop to stop after the current step.

    A signal that lands mid-update would leave weights and step counter out of step, so the
    loop checks this flag between steps instead. A second Ctrl-C stops at once (the last
    periodic checkpoint then stays the one to resume from).
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class _Progress:
    """A rich progress bar on a terminal; a log line every 10% elsewhere (CI, files), but not
    more often than every `interval` seconds. `label` names the work (default: pretraining);
    a `transient` bar is cleared when the work is done."""

    def __init__(
        self,
        total: int,
        start: int,
        enabled: bool,
        label: str | None = None,
        transient: bool = False,
        interval: float = 0.0,
    ) -> None:
        self.total, self.enabled, self.label, self.interval = (
            max(1, total),
            enabled,
            label,
            interval,
        )
        self.tty = enabled and sys.stderr.isatty()
        self._bar = None
        self._last_tenth = start * 10 // self.total
        self._last_line = time.perf_counter()
        if self.tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn(label or "pretrain"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),  # where isatty was asked, and off stdout's results
                transient=transient,
            )
            self._task = self._bar.add_task("train", total=self.total, completed=start, info="")
            self._bar.start()

    def update(self, step: int, info: str = "") -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
        elif self.enabled and step * 10 // self.total > self._last_tenth:
            self._last_tenth = step * 10 // self.total
            if time.perf_counter() - self._last_line >= self.interval:
                self._last_line = time.perf_counter()
                where = f"step {step}/{self.total}"
                line = f"{self.label}: {where}" if self.label else f"{where} {info}"
                print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pretrain(
    task: Task,
    dataset: ImageDataset | BatchDataset,
    out_dir: str | Path,
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    unit: str = "images",
) -> dict:
    """Train `task` on `dataset`, writing checkpoints and metrics under `out_dir`.

    `unit` names one sample of a batch on the progress bar and in messages (images, clips,
    sequences); the metrics key stays images_per_second whatever it counts.
    Returns a summary {"steps", "start_step", "seconds", "images_per_second", "final_loss"}
    (start_step: where this call began, > 0 when it resumed). With
    resume=True the run continues from out_dir/checkpoints/last.pt, including the optimizer,
    the schedule, the step and the random state.
    """
    from lightning_fabric import Fabric

    out_dir = Path(out_dir)
    strategy = "ddp" if config.devices * config.num_nodes > 1 else "auto"
    fabric = Fabric(
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=strategy,
        precision=config.precision,
    )
    fabric.launch()
    rank, world = fabric.global_rank, fabric.world_size
    device = fabric.device
    channels_last = device.type == "cuda" if config.channels_last is None else config.channels_last

    start_step, checkpoint = 0, None
    if resume:
        checkpoint = load_checkpoint(out_dir / CHECKPOINT)
        began_with = checkpoint.get("dataset_size", len(dataset))
        resized = began_with != len(dataset)
        changed = f"the run began with {began_with} samples, the data now has {len(dataset)}"
        try:
            task.load_state_dict(checkpoint["task"])
        except RuntimeError as error:
            # A memory bank has one row per sample, so its size is the data's size.
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            raise SelfSupError(
                f"{out_dir / CHECKPOINT} does not fit the task built from the data now "
                f"({lines[-1]}){'; ' + changed if resized else ''}. Resume on the data the "
                "run began with"
            ) from None
        start_step = int(checkpoint["step"])
        if resized and start_step < config.steps and rank == 0:
            print(
                f"note: {changed}; the run goes on, but its batches are not those of an "
                "uninterrupted run",
                file=sys.stderr,
            )

    task.channels_last = channels_last
    if channels_last:
        task.to(memory_format=torch.channels_last)
    # On its device before the optimizer exists: load_state_dict puts a resumed optimizer's
    # state (Adam's moments, momentum buffers) beside the parameters, and Fabric's setup
    # would move only the parameters.
    task.to(device)
    optimizer = make_optimizer(
        task, config.optimizer, config.lr, config.weight_decay, config.momentum
    )
    warmup = config.warmup_steps
    warmup = max(1, int(0.05 * config.steps)) if warmup is None else warmup
    scheduler = warmup_cosine(optimizer, config.steps, warmup)
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        _restore_rng(checkpoint["rng"])
    model, optimizer = fabric.setup(task, optimizer)
    if checkpoint is not None and checkpoint.get("precision"):
        # 16-mixed: the gradient scaler's current scale, so the resumed steps are the same.
        fabric.strategy.precision.load_state_dict(checkpoint["precision"])
    model.train()

    order = BatchOrder(len(dataset), config.batch_size, config.seed, rank, world, unit)
    metrics_path = out_dir / "metrics.jsonl"
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(metrics_path, start_step)
        kept = config.keep_every and start_step and start_step % config.keep_every == 0
        if kept and not (out_dir / kept_checkpoint(start_step)).exists():
            _keep_checkpoint(out_dir, start_step)  # killed after last.pt, before its copy

    def save(step: int) -> None:
        if rank == 0:
            _atomic_torch_save(
                {
                    "task": task.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "step": step,
                    "dataset_size": len(dataset),
                    "rng": _rng_states(),
                    "precision": fabric.strategy.precision.state_dict(),
                    "config": asdict(config),
                },
                out_dir / CHECKPOINT,
            )
            if config.keep_every and step % config.keep_every == 0:
                _keep_checkpoint(out_dir, step)
        fabric.barrier()

    bar = _Progress(config.steps, start_step, progress and rank == 0)
    step, window_start, window_images = start_step, time.perf_counter(), 0
    started, images_seen, last_logs = time.perf_counter(), 0, {}
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    stop = _StopRequest()
    try:
        batches = _batches(dataset, order, start_step, config.steps, device, config.num_workers)
        for images, idx in batches:
            _seed_step(config.seed, step, rank)
            if images is None:
                batch = {k: v.to(device) for k, v in dataset.get_batch(idx).items()}
                batch["indices"] = idx.to(device)
            else:
                batch = {
                    "images": images.float().div_(255),
                    "labels": dataset.labels[idx].to(device),
                    "indices": idx.to(device),
                }
                for key, value in dataset.extras(idx).items():
                    value = value.to(device, non_blocking=True)
                    batch[key] = value.float().div_(255) if value.dtype == torch.uint8 else value
            batch["step"] = torch.tensor(step)  # for schedules inside a task (lazy R1)
            logs = model(batch)
            loss = logs["loss"]
            nonfinite |= ~torch.isfinite(loss.detach())
            fabric.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            task.after_optimizer_step(step, config.steps)
            step += 1
            window_images += idx.shape[0] * world
            images_seen += idx.shape[0] * world

            boundary = step % config.log_every == 0 or step == config.steps
            at_checkpoint = step % config.checkpoint_every == 0
            if (boundary or at_checkpoint) and bool(nonfinite):
                raise SelfSupError(_nonfinite_message(step, out_dir / CHECKPOINT))
            if boundary:
                elapsed = time.perf_counter() - window_start
                last_logs = {k: float(v.detach()) for k, v in logs.items()}
                record = {
                    "step": step,
                    **last_logs,
                    "lr": scheduler.get_last_lr()[0],
                    "images_per_second": window_images / max(elapsed, 1e-9),
                    "time": time.perf_counter() - started,
                }
                if rank == 0:
                    with metrics_path.open("a") as f:
                        f.write(json.dumps(record) + "\n")
                bar.update(
                    step, f"loss {last_logs['loss']:.4f} {record['images_per_second']:.0f} {unit}/s"
                )
                window_start, window_images = time.perf_counter(), 0
            if at_checkpoint and step < config.steps:
                save(step)
            if stop.requested and step < config.steps:
                # Weights are consistent between steps: keep them so --resume loses nothing.
                save(step)
                raise Interrupted(
                    f"interrupted at step {step}/{config.steps}; checkpoint saved, continue "
                    f"with `selfsup pretrain --resume {out_dir}`"
                )
        save(step)
    except DataError as error:
        # A bad file is found when its batch is loaded, before that step changes any weight,
        # so the steps done so far are saved. (Under DDP the other ranks are mid-step; the
        # periodic checkpoint is the one to resume from.)
        if world > 1 or step == start_step:
            raise
        save(step)
        raise DataError(
            f"{error}. The run is saved at step {step}: fix the data, then "
            f"`selfsup pretrain --resume {out_dir}`"
        ) from None
    finally:
        stop.restore()
        bar.close()
    seconds = time.perf_counter() - started
    return {
        "steps": step,
        "start_step": start_step,
        "seconds": seconds,
        "images_per_second": images_seen / max(seconds, 1e-9),
        "final_loss": last_logs.get("loss"),
        "rank": rank,  # under DDP every process returns; only rank 0 reports and exports
    }


def _nonfinite_message(step: int, checkpoint: Path) -> str:
    # --resume would replay the same batches with the same settings (it refuses new ones),
    # so the way on is a new run; the last good weights are still worth naming.
    message = (
        f"the loss became NaN or infinite before step {step}; lower --lr, use --precision 32 "
        "or check the data, then start a new run"
    )
    if checkpoint.exists():
        good = int(load_checkpoint(checkpoint)["step"])
        return f"{message}. The last good weights (step {good}) are in {checkpoint}"
    return f"{message} (no checkpoint was written before it)"


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop log lines from steps after the checkpoint (they will be redone)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by a crash
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)
