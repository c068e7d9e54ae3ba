"""Fine-tuning a video run's backbone with its conv weights put back to a fresh network's scale.

    python benchmarks/video_finetune_rescaled.py runs/pilot/fo

Pretraining with Adam grows the conv weights. With batch norm after every conv (as in
small_cnn) the function does not depend on a conv's scale, but every later update is smaller
relative to the weights, so fine-tuning moves a grown network less. As Krähenbühl et al. 2016
("Data-dependent Initializations of CNNs") rescale pretrained networks before fine-tuning, each
conv is scaled to the norm of the same conv of a fresh network (seed 0), and the running
statistics of the batch norm after it with it: the function is unchanged. Prints the weight
growth per conv, then `selfsup evaluate`'s fine-tuning on Moving MNIST (both digits right,
label draw 0) of the backbone as it is, rescaled, and trained from scratch.
"""

from __future__ import annotations

import argparse
import copy

import torch
from run_benchmarks import bench_run  # benchmarks/, the folder of this script
from torch import nn

from selfsup.backbones import load_backbone
from selfsup.evaluate.baselines import random_init_backbone
from selfsup.evaluate.video import evaluate_video_backbone
from selfsup.recipe import build_data, load_run


@torch.no_grad()
def rescaled(backbone: nn.Module, fresh: nn.Module) -> tuple[nn.Module, list[float]]:
    """A copy of `backbone` with each conv scaled to the norm of `fresh`'s, and the running
    statistics of the next batch norm with it; returns it and each conv's growth factor."""
    out = copy.deepcopy(backbone)
    growth, scale = [], None
    for module, reference in zip(out.modules(), fresh.modules(), strict=True):
        if isinstance(module, nn.Conv2d):
            growth.append(float(module.weight.norm() / reference.weight.norm()))
            scale = 1.0 / growth[-1]
            module.weight.mul_(scale)
        elif isinstance(module, nn.BatchNorm2d) and scale is not None:
            module.running_mean.mul_(scale)
            module.running_var.mul_(scale**2)
            scale = None
    return out, growth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run on Moving MNIST (runs/bench/NAME or a path)")
    parser.add_argument("--labels", default="10%,100%", help="label fractions, e.g. 1%%,10%%")
    args = parser.parse_args()
    run = bench_run(args.run)
    recipe = load_run(run)
    train, test = build_data(recipe, "train"), build_data(recipe, "test")
    fractions = [float(f.rstrip("%")) / 100 for f in args.labels.split(",")]
    backbone = load_backbone(run / "backbone")
    same, growth = rescaled(backbone, random_init_backbone(backbone, 0))
    print("conv weight norm / a fresh network's:", " ".join(f"{g:.2f}" for g in growth))
    frames = torch.rand(8, *train.image_shape)
    change = (same.eval()(frames) - backbone.eval()(frames)).abs().max()
    print(f"largest change of the features on random frames after rescaling: {change:.1e}")
    rows = {}
    runs = (("fine-tuned", backbone, ["supervised"]), ("fine-tuned, rescaled", same, []))
    for name, net, baselines in runs:
        result = evaluate_video_backbone(
            net, train, test, protocols=["finetune"], fractions=fractions,
            baselines=baselines, progress=False,
        )  # fmt: skip
        for row in result["rows"]:
            method = name if row["method"] == "ssl" else "from scratch"
            rows.setdefault(method, {})[row["fraction"]] = row["accuracy"]
    print(f"{'both digits right':24s}" + "".join(f"{f:>8.0%}" for f in fractions))
    for method, values in rows.items():
        print(f"{method:24s}" + "".join(f"{values[f]:8.3f}" for f in fractions))


if __name__ == "__main__":
    main()
