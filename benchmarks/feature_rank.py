"""Effective rank of pretrained backbones' pooled features: a check for collapsed features.

    python benchmarks/feature_rank.py mmnist_simclr mmnist_frame_order \
        --data moving-mnist:../shared/data/mnist

Effective rank (Roy & Vetterli 2007) = exp(entropy of the normalised squared singular values of
the centred feature matrix): about the number of directions the features really use. Each NAME
is a finished run in runs/bench/NAME; the random network is the same architecture at seed 0.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from selfsup.backbones import build_backbone, load_backbone
from selfsup.data import load_images
from selfsup.data.video import VideoDataset
from selfsup.evaluate.features import extract_features
from selfsup.evaluate.video import clip_frames

ROOT = Path(__file__).resolve().parents[1]


def effective_rank(features: torch.Tensor) -> float:
    centred = features - features.mean(0)
    energy = torch.linalg.svdvals(centred.double()) ** 2
    p = energy / energy.sum()
    return float(torch.exp(-(p * torch.log(p.clamp_min(1e-30))).sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="runs in runs/bench/")
    parser.add_argument("--data", required=True, help="data spec, e.g. fashion-mnist:DIR")
    parser.add_argument("--image-size", type=int, default=32)
    args = parser.parse_args()
    data = load_images(args.data, "test", image_size=args.image_size)
    if isinstance(data, VideoDataset):
        data = clip_frames(data)  # 10 frames per clip, as the downstream sees them
    backbones = {}
    first = load_backbone(ROOT / "runs" / "bench" / args.names[0] / "backbone", check_inputs=False)
    torch.manual_seed(0)
    backbones["random init"] = build_backbone(**first.config)
    for name in args.names:
        backbones[name] = load_backbone(
            ROOT / "runs" / "bench" / name / "backbone", check_inputs=False
        )
    print(f"{'backbone':32s} effective rank (of {first.feature_dim}; {len(data)} test images)")
    for name, backbone in backbones.items():
        features = extract_features(backbone.eval(), data)
        print(f"{name:32s} {effective_rank(features):6.1f}")


if __name__ == "__main__":
    main()
