"""SimCLR pretraining throughput against the bare backbone, measured in one run.

    python benchmarks/throughput.py [--backbone small_cnn] [--batch-size 256] [--seconds 20]

"Bare" is the backbone's forward + backward + optimizer step on a ready-made two-view batch
(no augmentation, no head, no loss beyond a sum). "Pretrain" is the real engine step: uint8
batch to float, two augmented views on the device, backbone, projection head, NT-Xent,
backward, step. Both count source images per second (a two-view batch of B images is B
images), and are interleaved bare / pretrain / bare so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from selfsup.backbones import build_backbone
from selfsup.data import load_images
from selfsup.engine import TrainConfig, pretrain
from selfsup.tasks.simclr import SimCLR


def bare_rate(backbone, images: torch.Tensor, seconds: float, channels_last: bool) -> float:
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=1e-3)
    views = torch.cat([images, images]).float() / 255
    if channels_last:
        views = views.contiguous(memory_format=torch.channels_last)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or done < 3:
        backbone(views).sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done += 1
    if views.is_cuda:
        torch.cuda.synchronize()
    return done * images.shape[0] / (time.perf_counter() - start)


def pretrain_rate(
    task, dataset, steps: int, batch_size: int, accelerator: str, precision: str, tmp: str
) -> float:
    config = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        log_every=max(1, steps // 10),
        checkpoint_every=10**9,
        accelerator=accelerator,
        precision=precision,
        warmup_steps=1,
    )
    pretrain(task, dataset, tmp, config, progress=False)
    with open(f"{tmp}/metrics.jsonl") as f:
        rates = [json.loads(line)["images_per_second"] for line in f]
    return sorted(rates[1:])[len(rates[1:]) // 2]  # median window, first (warm-up) dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="small_cnn")
    parser.add_argument("--data", default="fashion-mnist:../shared/data/fashion-mnist")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--precision", default="32")
    args = parser.parse_args()
    import tempfile

    dataset = load_images(args.data, "train")
    torch.manual_seed(0)
    backbone = build_backbone(args.backbone, dataset.image_shape[0], dataset.image_shape[1])
    device = torch.device("cuda" if args.accelerator == "cuda" else "cpu")
    channels_last = device.type == "cuda"
    images = dataset.get_batch(torch.arange(args.batch_size)).to(device)
    backbone.to(device)
    if channels_last:
        backbone.to(memory_format=torch.channels_last)

    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed"
    )
    with autocast:
        bare_rate(backbone, images, 2.0, channels_last)  # warm-up
        bare_before = bare_rate(backbone, images, args.seconds / 2, channels_last)
    # Calibrate steps so the engine run lasts about `seconds`.
    steps = max(10, int(bare_before * args.seconds / args.batch_size))
    task = SimCLR(backbone, dataset.image_shape)
    with tempfile.TemporaryDirectory() as tmp:
        engine = pretrain_rate(
            task, dataset, steps, args.batch_size, args.accelerator, args.precision, tmp
        )
    with autocast:
        bare_after = bare_rate(task.backbone, images, args.seconds / 2, channels_last)
    bare = (bare_before + bare_after) / 2
    print(
        json.dumps(
            {
                "backbone": args.backbone,
                "data": args.data,
                "batch_size": args.batch_size,
                "device": torch.cuda.get_device_name()
                if device.type == "cuda"
                else platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(),
                "precision": args.precision,
                "bare_images_per_s": round(bare, 1),
                "pretrain_images_per_s": round(engine, 1),
                "ratio": round(engine / bare, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
