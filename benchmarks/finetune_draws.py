"""Few-label fine-tuning of image runs over several label draws: as pretrained, rescaled, and
from scratch.

    python benchmarks/finetune_draws.py fmnist_inpainting --labels 1% --draws 6

For each draw (seed 0 .. N-1; stratified subsets exactly as `selfsup evaluate --seed S` draws
them), `selfsup evaluate`'s fine-tuning of each run's backbone as it is (the `finetune` row),
the same after `rescale` (`selfsup evaluate --rescale`: each conv scaled back to a fresh
network's weight norm, the function unchanged), and the first run's architecture trained from
scratch with the same budget (the `supervised` row). Prints every draw, then per row the mean,
the standard deviation and the paired differences (mean ± its standard error over draws).
Runs are runs/bench/NAME (or a path) of image data with a CNN backbone.
"""

from __future__ import annotations

import statistics
import time

from run_benchmarks import image_draw_runs, paired_gap  # benchmarks/, the folder of this script

from selfsup.evaluate import stratified_subset
from selfsup.evaluate.finetune import (
    conv_growth,
    finetune_accuracy,
    supervised_from_scratch_accuracy,
)
from selfsup.evaluate.labels import subset_dataset
from selfsup.runs import run_backbone

SCRATCH = "from scratch"


def main() -> None:
    args, fraction, paths, train, test = image_draw_runs(__doc__.splitlines()[0], 6)
    backbones = {name: run_backbone(path) for name, path in paths.items()}
    for name, backbone in backbones.items():
        growth = conv_growth(backbone, train.image_shape)
        print(f"{name}: conv weight norms / a fresh network's: "
              + " ".join(f"{g:.2f}" for *_, g in growth))  # fmt: skip

    accuracy: dict[str, list[float]] = {}

    def record(name: str, seed: int, fn, *fn_args, **options) -> None:
        started = time.perf_counter()
        value = fn(*fn_args, seed=seed, **options)
        accuracy.setdefault(name, []).append(value)
        print(f"draw {seed}  {name:<40} {value:.4f}  ({time.perf_counter() - started:.0f} s)",
              flush=True)  # fmt: skip

    for seed in range(args.draws):
        labelled = subset_dataset(train, stratified_subset(train.labels, fraction, seed))
        for name, backbone in backbones.items():
            record(name, seed, finetune_accuracy, backbone, labelled, test)
            record(f"{name}, rescaled", seed, finetune_accuracy, backbone, labelled, test,
                   rescale=True)  # fmt: skip
        config = next(iter(backbones.values())).config
        record(SCRATCH, seed, supervised_from_scratch_accuracy, config, labelled, test)

    print(f"\n{args.labels} labels ({len(labelled)}), {args.draws} draws, fine-tuned\n")
    print("| backbone | mean | sd | minus as pretrained (± se) | draws above it "
          "| minus from scratch (± se) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for name, values in accuracy.items():
        cells = [f"{statistics.mean(values):.4f}", f"{statistics.stdev(values):.4f}", "", "", ""]
        if name.endswith(", rescaled"):
            pretrained = accuracy[name.removesuffix(", rescaled")]
            above = sum(a > b for a, b in zip(values, pretrained, strict=True))
            cells[2:4] = [paired_gap(values, pretrained), f"{above} / {len(values)}"]
        if name != SCRATCH:
            cells[4] = paired_gap(values, accuracy[SCRATCH])
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
