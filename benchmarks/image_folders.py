"""Write a data set's images as PNG files in class folders, the way a user's own labelled
images would sit on disk, for measuring `selfsup finetune` and `selfsup predict` on files.

    python benchmarks/image_folders.py fashion-mnist:../shared/data/fashion-mnist \
        --split train --per-class 60 --out /tmp/story/labelled

`--per-class 0` writes every image of the split. The first images of each class are taken,
in the data set's order, so the folders are the same on every run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from selfsup.data import load_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="a data spec, e.g. fashion-mnist:DIR or cifar10:DIR")
    parser.add_argument("--split", default="train", choices=("train", "test"))
    parser.add_argument("--per-class", type=int, default=0, help="0: every image")
    parser.add_argument("--out", required=True, help="folder to create (must not exist)")
    args = parser.parse_args()

    out = Path(args.out)
    if out.exists():
        parser.error(f"{out} exists; give a new folder")
    dataset = load_images(args.data, args.split)
    names = [str(c).replace("/", "-") for c in dataset.classes]
    written = 0
    for label, name in enumerate(names):
        indices = torch.nonzero(dataset.labels == label).flatten().tolist()
        if args.per_class:
            indices = indices[: args.per_class]
        (out / name).mkdir(parents=True)
        for i in indices:
            pixels = dataset.images[i].permute(1, 2, 0).squeeze(-1).numpy()
            Image.fromarray(pixels).save(out / name / f"{i}.png")
        written += len(indices)
    print(f"wrote {written} images in {len(names)} class folders under {out}")


if __name__ == "__main__":
    main()
