"""Clip linear probe of a video run's backbone, stage by stage or checkpoint by checkpoint.

    python benchmarks/video_probe.py runs/pilot/fo --stages
    selfsup pretrain --recipe recipes/mmnist_frame_order.yaml --checkpoint-every 100 \
        --keep-every 100 --out runs/pilot/fo_steps
    python benchmarks/video_probe.py runs/pilot/fo_steps --checkpoints
    python benchmarks/video_probe.py runs/pilot/fo --random-seeds 5

The downstream of `selfsup evaluate` on Moving MNIST (a clip is the mean of its frames'
features, one-vs-rest logistic regression, both digits right) at 1% / 10% / 100% of the
labelled clips, label draw 0. `--stages` reads the global average of every stage's output of
the final backbone and of the random network (the same architecture at seed 0): whether a
lower stage kept or gained what the last one lost. `--checkpoints` reads the final stage of
every kept checkpoints/step_N.pt: whether the features were ever above the random network on
the way. `--random-seeds N` reads random networks of the run's architecture built with seeds
0..N-1 (seed 0 is the evaluation's random-init baseline): how far a run must be above that
baseline before the difference is more than the luck of one initialisation.
"""

from __future__ import annotations

import argparse

import torch
from run_benchmarks import bench_run  # benchmarks/, the folder of this script
from torch import nn

from selfsup.evaluate.baselines import random_init_backbone
from selfsup.evaluate.video import evaluate_video_backbone
from selfsup.recipe import build_data, load_run
from selfsup.runs import trained_task

FRACTIONS = (0.01, 0.1, 1.0)


class PooledStage(nn.Module):
    """The global average of the output of a backbone's first `stages` stages."""

    def __init__(self, backbone: nn.Module, stages: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*backbone.stages()[:stages])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images).mean(dim=(2, 3))


def clip_accuracies(encoder: nn.Module, train, test) -> list[float]:
    """Both-digits-right accuracy of the evaluation's linear probe at each of FRACTIONS."""
    results = evaluate_video_backbone(
        encoder.eval(), train, test, protocols=("linear",), fractions=FRACTIONS, baselines=(),
        progress=False,
    )  # fmt: skip
    return [row["accuracy"] for row in results["rows"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a Moving MNIST run (runs/bench/NAME or a path)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--stages", action="store_true", help="every stage of the final weights")
    which.add_argument("--checkpoints", action="store_true", help="every kept checkpoint")
    which.add_argument("--random-seeds", type=int, metavar="N", help="N random networks")
    args = parser.parse_args()
    run = bench_run(args.run)
    recipe = load_run(run)
    train, test = build_data(recipe, "train"), build_data(recipe, "test")
    if getattr(train, "clip_labels", None) is None:
        raise SystemExit(f"{args.run}: not a run on labelled clips (use moving-mnist:DIR data)")
    header = "  ".join(f"{f:>6.0%}" for f in FRACTIONS)
    if args.stages:
        final = trained_task(run, tuple(train.image_shape)).backbone
        print(f"{'backbone':<8} {'stage':>5}  {header}")
        for name, backbone in (("run", final), ("random", random_init_backbone(final, 0))):
            for stages in range(1, len(backbone.stages()) + 1):
                accuracies = clip_accuracies(PooledStage(backbone, stages), train, test)
                row = "  ".join(f"{a:>6.3f}" for a in accuracies)
                print(f"{name:<8} {stages:>5}  {row}", flush=True)
        return
    if args.random_seeds is not None:
        if args.random_seeds < 2:
            raise SystemExit(f"--random-seeds needs at least 2 networks, got {args.random_seeds}")
        final = trained_task(run, tuple(train.image_shape)).backbone
        print(f"{'seed':>6}  {header}")
        scores = []
        for seed in range(args.random_seeds):
            scores.append(clip_accuracies(random_init_backbone(final, seed), train, test))
            print(f"{seed:>6}  " + "  ".join(f"{a:>6.3f}" for a in scores[-1]), flush=True)
        mean, spread = torch.tensor(scores).mean(0), torch.tensor(scores).std(0)
        print(f"{'mean':>6}  " + "  ".join(f"{a:>6.3f}" for a in mean))
        print(f"{'sd':>6}  " + "  ".join(f"{a:>6.3f}" for a in spread))
        return
    checkpoints = sorted((run / "checkpoints").glob("step_*.pt"), key=lambda p: int(p.stem[5:]))
    if not checkpoints:
        raise SystemExit(f"{run} kept no checkpoints: pretrain it with --keep-every N")
    print(f"{'step':>6}  {header}")
    for path in checkpoints:
        backbone = trained_task(run, tuple(train.image_shape), checkpoint=path).backbone
        accuracies = clip_accuracies(backbone, train, test)
        print(f"{int(path.stem[5:]):>6}  " + "  ".join(f"{a:>6.3f}" for a in accuracies),
              flush=True)  # fmt: skip


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
