"""Pretraining throughput against the bare backbone, and peak memory, measured in one run.

    python benchmarks/throughput.py                                   # SimCLR, as in the README
    python benchmarks/throughput.py fmnist_moco fmnist_byol --record  # one row per recipe

"Bare" is the backbone's forward + backward + AdamW step on a ready-made two-view batch of the
recipe's batch size (no augmentation, no head, no loss beyond a sum): what any two-view method
must pay at least. "Pretrain" is the real engine step of the recipe's task: uint8 batch to
float, views made on the device, backbone(s), heads, loss, backward, step, memory bank or queue
update. Both count source images per second (a batch of B images is B images however many
views the task makes of it). The phases are interleaved pretrain / bare / pretrain so machine
noise hits both alike. A ratio below 1 means the method does more than two backbone passes per
image (a momentum encoder, jigsaw tiles); above 1, fewer (one view).

Clip tasks (frame order, odd-one-out, future frames, DPC) encode several frames of each clip:
their "bare" is the backbone's forward + backward + step on a batch of real frames as large as
the task encodes per step (counted at the backbone's first stage during the first timed run),
and both rates count clips per second. The ratio then says what the task's sampling, heads and
decoders cost beyond encoding its frames.

Peak memory: on CPU, the process's peak resident set (ru_maxrss) at the end of the first
pretrain phase minus the resident set just before it (data and model already loaded), i.e. what
training adds: activations, gradients, optimizer state, memory bank, queue, target network.
On CUDA, torch.cuda.max_memory_allocated over that phase. Each recipe runs in its own process so
one method's peak cannot hide another's.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
from run_benchmarks import machine  # benchmarks/ is on sys.path when this script runs

from selfsup.engine import TrainConfig, pretrain
from selfsup.recipe import Recipe, build_data, build_task, load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "docs" / "results" / "costs.json"


def bare_rate(backbone, batch: torch.Tensor, samples: int, seconds: float) -> float:
    """Samples (images or clips) per second of the backbone's forward + backward + AdamW step
    on `batch`, a ready float batch that holds `samples` of them."""
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=1e-3)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or done < 3:
        backbone(batch).sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done += 1
    if batch.is_cuda:
        torch.cuda.synchronize()
    return done * samples / (time.perf_counter() - start)


class FrameCounter:
    """Counts the images entering a backbone's first stage while it trains (with gradients)."""

    def __init__(self, backbone) -> None:
        self.images = 0
        self.hook = backbone.stages()[0].register_forward_hook(self.count)

    def count(self, module, inputs, _output) -> None:
        if module.training and torch.is_grad_enabled():
            self.images += inputs[0].shape[0]


def pretrain_rate(task, dataset, steps: int, recipe: Recipe, args) -> float:
    config = TrainConfig(
        steps=steps,
        batch_size=recipe.train.get("batch_size", 256),
        log_every=max(1, steps // 10),
        checkpoint_every=10**9,
        accelerator=args.accelerator,
        precision=args.precision,
        warmup_steps=1,
    )
    with tempfile.TemporaryDirectory() as tmp:
        pretrain(task, dataset, tmp, config, progress=False)
        with open(f"{tmp}/metrics.jsonl") as f:
            rates = [json.loads(line)["images_per_second"] for line in f]
    return sorted(rates[1:])[len(rates[1:]) // 2]  # median window, first (warm-up) dropped


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def measure(recipe: Recipe, name: str, args) -> dict:
    dataset = build_data(recipe)
    torch.manual_seed(0)
    task = build_task(recipe, dataset.image_shape, len(dataset))
    batch_size = recipe.train.get("batch_size", 256)
    cuda = args.accelerator == "cuda"
    images = dataset.get_batch(torch.arange(batch_size))

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    before = resident_mb()
    # A short engine run to size the timed ones so each lasts about seconds / 2.
    probe = pretrain_rate(task, dataset, 6, recipe, args)
    steps = max(10, int(probe * args.seconds / 2 / batch_size))
    clips = getattr(task, "takes_clips", False)
    counter = FrameCounter(task.backbone) if clips else None
    first = pretrain_rate(task, dataset, steps, recipe, args)
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before

    backbone = task.backbone
    device = next(backbone.parameters()).device
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed"
    )
    if clips:  # the frames the task encodes per step, real ones
        counter.hook.remove()
        per_step = counter.images // steps
        batch = dataset.get_batch(torch.arange(per_step) % len(dataset)).to(device).float() / 255
    else:  # two views of each image
        batch = torch.cat([images, images]).to(device).float() / 255
        if cuda:
            batch = batch.contiguous(memory_format=torch.channels_last)
    with autocast:
        bare_rate(backbone, batch, batch_size, 1.0)  # warm-up
        bare = bare_rate(backbone, batch, batch_size, args.seconds / 2)
    second = pretrain_rate(task, dataset, steps, recipe, args)
    engine = (first + second) / 2
    return {
        "name": name,
        "task": recipe.task,
        "backbone": recipe.backbone,
        "data": recipe.data,
        "batch_size": batch_size,
        "date": date.today().isoformat(),
        "device": torch.cuda.get_device_name() if cuda else machine(),
        "threads": torch.get_num_threads(),
        "precision": args.precision,
        "unit": "clips" if clips else "images",
        "frames_encoded_per_step": per_step if clips else 2 * batch_size,
        "bare_images_per_s": round(bare, 1),
        "pretrain_images_per_s": round(engine, 1),
        "ratio": round(engine / bare, 3),
        "peak_memory_mb": round(peak, 1),
        "peak_memory_kind": "cuda max allocated" if cuda else "CPU peak RSS added by training",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", help="recipe names (recipes/<name>.yaml)")
    parser.add_argument("--backbone", default="small_cnn", help="without recipes: SimCLR on it")
    parser.add_argument("--data", default="fashion-mnist:../shared/data/fashion-mnist")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase pair")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--precision", default="32")
    parser.add_argument("--record", action="store_true", help=f"merge rows into {RECORD}")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if len(args.recipes) > 1 or (args.recipes and not args.in_process):
        # One process per recipe: a clean peak-memory reading each.
        rows = []
        flags = ["--seconds", str(args.seconds), "--accelerator", args.accelerator]
        flags += ["--precision", args.precision]
        for name in args.recipes:
            command = [sys.executable, __file__, name, "--in-process", *flags]
            started = time.perf_counter()
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            row["wall_seconds"] = round(time.perf_counter() - started)
            print(json.dumps(row), flush=True)
            rows.append(row)
        if args.record:
            record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
            record.update({row["name"]: row for row in rows})
            RECORD.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
            print(f"wrote {RECORD.relative_to(ROOT)}")
        return

    if args.recipes:
        name = args.recipes[0]
        recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml")
    else:
        name = "simclr"
        recipe = Recipe(
            task="simclr",
            backbone=args.backbone,
            data=args.data,
            train={"batch_size": args.batch_size},
        )
    print(json.dumps(measure(recipe, name, args)))


if __name__ == "__main__":
    main()
