"""Does a frame-order network look at what the frames show? Its verdict on foreign frames.

    python benchmarks/frame_order_foreign.py runs/bench/mmnist_frame_order

On the run's test clips (draws seeded with 0), the trained frame-order head judges three kinds
of tuple: in order (b, c, d); shuffled (b, a, d) or (b, e, d), as in training; and foreign
(b, x, d), x the frame of another test clip (of all 10,000 frames) whose coarse layout is
closest to c's (selfsup.tasks.clips.closest_frame_elsewhere), so that where the ink is fits
the order and only what the digits are gives x away. Prints the share of each kind judged
right and the mean layout distance of the swapped-in frame to c: a network that orders frames
by where the blobs are, ignoring which digits they are, calls most foreign tuples in order.
"""

from __future__ import annotations

import argparse

import torch
from run_benchmarks import bench_run  # benchmarks/, the folder of this script

from selfsup.recipe import build_data, load_run
from selfsup.runs import trained_task
from selfsup.tasks.clips import closest_frame_elsewhere, coarse_layout, read_frames
from selfsup.tasks.frame_order import order_tuples


def middle_distance(tuples: torch.Tensor, true_middle: torch.Tensor) -> torch.Tensor:
    """L2 distance between the coarse layouts of each tuple's middle frame and c."""
    return (coarse_layout(tuples[:, 1]) - coarse_layout(true_middle)).norm(dim=1)


def head_says_in_order(task, tuples: torch.Tensor) -> torch.Tensor:
    return task.head(read_frames(task, task.readout, tuples).flatten(1)).squeeze(1) > 0


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
    right: dict[str, list[float]] = {"in order": [], "shuffled": [], "foreign": []}
    distance: dict[str, list[float]] = {"shuffled": [], "foreign": []}
    torch.manual_seed(0)
    for start in range(0, len(clips), args.batch):
        rows = torch.arange(start, min(start + args.batch, len(clips)))
        tuples, labels, index = order_tuples(clips[rows], task.gap, task.windows)
        true_middle = clips[rows, (index[:, 0] + index[:, 2]) // 2]
        clip, frame = closest_frame_elsewhere(clips, true_middle, rows)
        foreign = tuples.clone()
        foreign[:, 1] = clips[clip, frame]
        negative = labels == 0
        in_order = head_says_in_order(task, tuples)
        right["in order"] += in_order[~negative].float().tolist()
        right["shuffled"] += (~in_order[negative]).float().tolist()
        right["foreign"] += (~head_says_in_order(task, foreign)).float().tolist()
        distance["shuffled"] += middle_distance(tuples, true_middle)[negative].tolist()
        distance["foreign"] += middle_distance(foreign, true_middle).tolist()
    print(f"{args.run}: {len(clips)} test clips")
    for kind, values in right.items():
        line = f"  {kind:<9} tuples judged right: {sum(values) / len(values):.3f}"
        if kind in distance:
            moved = distance[kind]
            line += f"  (layout distance of the middle frame to c: {sum(moved) / len(moved):.3f})"
        print(line)


if __name__ == "__main__":
    main()
