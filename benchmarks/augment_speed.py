"""Images per second of each batched augmentation and of a full SimCLR view, on CPU.

    .venv/bin/python benchmarks/augment_speed.py [--batch 256] [--size 32] [--seconds 1]

Each op runs repeatedly on one random batch for about `--seconds` seconds; the figure is the
median over repeats, so a noisy shared machine moves it less.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from selfsup.augment import (
    ViewAugment,
    color_jitter,
    gaussian_blur,
    horizontal_flip,
    light_augment,
    random_grayscale,
    random_resized_crop,
    simclr_augment,
    solarize,
)


def images_per_second(
    fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, seconds: float
) -> float:
    fn(images)  # warm-up
    rates = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(rates) < 3:
        start = time.perf_counter()
        fn(images)
        rates.append(images.shape[0] / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.rand(args.batch, args.channels, args.size, args.size)
    size = args.size

    def crop_flip_jitter_gray(x: torch.Tensor) -> torch.Tensor:
        x = horizontal_flip(random_resized_crop(x, size))
        return random_grayscale(color_jitter(x))

    ops: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "random_resized_crop": lambda x: random_resized_crop(x, size),
        "horizontal_flip": horizontal_flip,
        "color_jitter (p=1)": lambda x: color_jitter(x, p=1.0),
        "random_grayscale": random_grayscale,
        "gaussian_blur (p=1)": lambda x: gaussian_blur(x, p=1.0),
        "solarize (p=1)": lambda x: solarize(x, p=1.0),
        "crop+flip+jitter+gray": crop_flip_jitter_gray,
        "light_augment": light_augment,
        f"simclr_augment({size}, {args.channels})": simclr_augment(size, args.channels),
        "ViewAugment (blur_p=0.5)": ViewAugment(blur_p=0.5),
    }
    print(
        f"batch {args.batch} x {args.channels}x{size}x{size}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    for name, fn in ops.items():
        print(f"{name:28s} {images_per_second(fn, images, args.seconds):>10,.0f} images/s")


if __name__ == "__main__":
    main()
