"""Does a frame-order network look at what the frames show? Its verdict on foreign frames.

    python benchmarks/frame_order_foreign.py runs/bench/mmnist_frame_order

On the run's test clips (draws seeded with 0), the trained frame-order head judges three kinds
of tuple: in order (b, c, d); shuffled (b, a, d) or (b, e, d), as in training; and foreign
(b, x, d), x the frame of another test clip (of all 10,000 frames) whose coarse layout is
closest to c's (selfsup.tasks.clips.closest_frame_elsewhere), so that where the ink is fits
the order and only what the digits are gives x away. On Moving MNIST runs a fourth kind,
repainted (b, c', d): c redrawn with other digits (other classes, from the MNIST test set) on
exactly the same paths, so that not even a pixel of where the ink is gives c' away. Prints the
share of each kind judged right and the mean layout distance of the swapped-in frame to c: a
network that orders frames by where the blobs are, ignoring which digits they are, calls most
foreign and repainted tuples in order.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from run_benchmarks import bench_run  # benchmarks/, the folder of this script

from selfsup.data.idx import load_idx_dataset
from selfsup.data.moving_mnist import DEFAULTS, draw_digits, generate_clips
from selfsup.data.video import parse_options, resize_clips
from selfsup.recipe import build_data, load_run
from selfsup.runs import trained_task
from selfsup.tasks.clips import closest_frame_elsewhere, coarse_layout
from selfsup.tasks.frame_order import order_tuples


def middle_distance(tuples: torch.Tensor, true_middle: torch.Tensor) -> torch.Tensor:
    """L2 distance between the coarse layouts of each tuple's middle frame and c."""
    return (coarse_layout(tuples[:, 1]) - coarse_layout(true_middle)).norm(dim=1)


def head_says_in_order(task, tuples: torch.Tensor) -> torch.Tensor:
    return task.order_logits(tuples) > 0


def repainted_clips(spec: str, image_size: int) -> torch.Tensor | None:
    """The test clips of a Moving MNIST spec redrawn with other digits on the same paths
    (uint8, at `image_size`), or None for other data. Each digit is replaced by a seeded random
    MNIST test digit of a class the clip does not show (and no two alike; upright, even in
    spinning clips)."""
    kind, _, rest = spec.partition(":")
    if kind != "moving-mnist":
        return None
    mnist = load_idx_dataset(parse_options(rest, DEFAULTS)[0], "test", "mnist")
    images, labels = mnist.images[:, 0].numpy(), mnist.labels.numpy()
    twins = []
    for i, clip in enumerate(generate_clips(rest, "test")):
        rng = np.random.default_rng([12345, i])
        taken = set(clip.digits.tolist())
        others = []
        while len(others) < len(clip.digits):
            j = int(rng.integers(len(images)))
            if int(labels[j]) not in taken:
                taken.add(int(labels[j]))
                others.append(j)
        twins.append(draw_digits(images[others], clip.positions, clip.frames.shape[-1]))
    return resize_clips(torch.from_numpy(np.stack(twins))[:, :, None], image_size)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a frame_order run on clips (runs/bench/NAME or a path)")
    parser.add_argument("--batch", type=int, default=64, help="tuples judged at once")
    args = parser.parse_args()
    run = bench_run(args.run)
    recipe = load_run(run)
    if recipe.task != "frame_order":
        raise SystemExit(f"{args.run} is a {recipe.task} run; give a frame_order run")
    test = build_data(recipe, "test")
    task = trained_task(run, tuple(test.image_shape))
    clips = test.clips.float() / 255
    twins = repainted_clips(recipe.data, test.clips.shape[-1])
    right: dict[str, list[float]] = {"in order": [], "shuffled": [], "foreign": []}
    if twins is not None:
        twins = twins.float() / 255
        right["repainted"], distance_repainted = [], []
    distance: dict[str, list[float]] = {"shuffled": [], "foreign": []}
    torch.manual_seed(0)
    for start in range(0, len(clips), args.batch):
        rows = torch.arange(start, min(start + args.batch, len(clips)))
        tuples, labels, index = order_tuples(clips[rows], task.gap, task.windows)
        true_middle = clips[rows, (index[:, 0] + index[:, 2]) // 2]
        clip, frame = closest_frame_elsewhere(clips, true_middle, rows)
        foreign = tuples.clone()
        foreign[:, 1] = clips[clip[:, 0], frame[:, 0]]
        negative = labels == 0
        in_order = head_says_in_order(task, tuples)
        right["in order"] += in_order[~negative].float().tolist()
        right["shuffled"] += (~in_order[negative]).float().tolist()
        right["foreign"] += (~head_says_in_order(task, foreign)).float().tolist()
        if twins is not None:
            repainted = tuples.clone()
            repainted[:, 1] = twins[rows, (index[:, 0] + index[:, 2]) // 2]
            right["repainted"] += (~head_says_in_order(task, repainted)).float().tolist()
            distance_repainted += middle_distance(repainted, true_middle).tolist()
        distance["shuffled"] += middle_distance(tuples, true_middle)[negative].tolist()
        distance["foreign"] += middle_distance(foreign, true_middle).tolist()
    if twins is not None:
        distance["repainted"] = distance_repainted
    print(f"{args.run}: {len(clips)} test clips")
    for kind, values in right.items():
        line = f"  {kind:<9} tuples judged right: {sum(values) / len(values):.3f}"
        if kind in distance:
            moved = distance[kind]
            line += f"  (layout distance of the middle frame to c: {sum(moved) / len(moved):.3f})"
        print(line)


if __name__ == "__main__":
    main()
