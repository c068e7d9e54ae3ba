"""Few-label linear-probe accuracy of image runs over several label draws, against random init.

    python benchmarks/label_draws.py fmnist_gan_r1 --labels 1% --draws 10

At 1% labels the linear probe's accuracy moves by about a point with the draw of the labelled
images alone, as much as some of the gaps the results table reads off one draw. So, for each
draw (seed 0 .. N-1; stratified subsets exactly as `selfsup evaluate --seed S` draws them, seed
0 being the table's), logistic regression on the evaluation's features of

- each run's backbone (its `linear` row), and
- the first run's architecture at random initialisation, built once with seed 0 (the table's
  `random_init` row), so that only the labels change from draw to draw.

Runs are runs/bench/NAME (or a path) of image data (video and text have their own protocols).
Prints every draw, then per backbone the mean and standard deviation over draws and the paired
difference against random init (mean and its standard error over draws): the draws are shared,
so the paired difference cancels how easy a draw was. The text version is text_label_draws.py.

`--random-seeds N` adds random networks built with seeds 1..N-1 as backbones of their own:
their difference from the seed-0 network is how much the baseline moves with its
initialisation alone, the yardstick for a run's difference from it.

    python benchmarks/label_draws.py fmnist_gan_r1_long fmnist_inpainting --random-seeds 4
"""

from __future__ import annotations

import statistics
import time

import torch
from run_benchmarks import image_draw_runs, paired_gap  # benchmarks/, the folder of this script

from selfsup.evaluate import extract_features, linear_probe_accuracy, stratified_subset
from selfsup.evaluate.baselines import random_init_backbone
from selfsup.runs import run_backbone

RANDOM = "random init"


def main() -> None:
    description = __doc__.splitlines()[0]
    args, fraction, paths, train, test = image_draw_runs(description, 10, random_seeds=True)
    num_classes = int(train.labels.max()) + 1
    first = run_backbone(paths[args.runs[0]])
    backbones = {RANDOM: random_init_backbone(first, 0)}
    for seed in range(1, args.random_seeds):
        backbones[f"random init, seed {seed}"] = random_init_backbone(first, seed)
    backbones.update((name, run_backbone(path)) for name, path in paths.items())
    features = {}
    for name, backbone in backbones.items():
        backbone.eval()
        features[name] = (extract_features(backbone, train), extract_features(backbone, test))

    accuracy: dict[str, list[float]] = {name: [] for name in features}
    for seed in range(args.draws):
        idx = stratified_subset(train.labels, fraction, seed)
        for name, (train_x, test_x) in features.items():
            started = time.perf_counter()
            value = linear_probe_accuracy(train_x[idx], train.labels[idx], test_x, test.labels,
                                          seed=seed, num_classes=num_classes)  # fmt: skip
            accuracy[name].append(value)
            print(f"draw {seed}  {name:<28} {value:.3f}  ({time.perf_counter() - started:.0f} s)",
                  flush=True)  # fmt: skip

    print(f"\n{args.labels} labels ({len(idx)}), {args.draws} draws\n")
    print("| backbone | mean | sd | minus random init (± se) | draws above random init |")
    print("|---|---:|---:|---:|---:|")
    for name, values in accuracy.items():
        cells = [f"{statistics.mean(values):.3f}", f"{statistics.stdev(values):.3f}", "", ""]
        if name != RANDOM:
            above = sum(a > b for a, b in zip(values, accuracy[RANDOM], strict=True))
            cells[2:] = [paired_gap(values, accuracy[RANDOM]), f"{above} / {len(values)}"]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
