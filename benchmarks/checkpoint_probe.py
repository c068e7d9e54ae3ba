"""Linear probe of the backbone in each kept checkpoint of a run: how features change in training.

    selfsup pretrain --recipe recipes/fmnist_gan_r1.yaml --out runs/pilot/gan_r1 \
        --steps 2400 --checkpoint-every 300 --keep-every 300
    python benchmarks/checkpoint_probe.py runs/pilot/gan_r1 --labels 1%,10%

For every checkpoints/step_N.pt (written with `keep_every`) and the final last.pt: logistic
regression on the backbone's features with the evaluation's label subsets (seed 0), scored on
the test split. Tells whether a run was still improving when its step budget ended, or fell
below the random network early and recovered.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from selfsup.engine import CHECKPOINT, load_checkpoint
from selfsup.evaluate import extract_features, linear_probe_accuracy, stratified_subset
from selfsup.recipe import build_data, build_task, load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run directory written by selfsup pretrain")
    parser.add_argument("--labels", default="1%,10%", help="label fractions, e.g. 1%%,10%%")
    args = parser.parse_args()
    fractions = [float(f.rstrip("%")) / 100 for f in args.labels.split(",")]
    recipe = load_run(args.run)
    train, test = build_data(recipe, "train"), build_data(recipe, "test")
    num_classes = int(train.labels.max()) + 1
    checkpoints = sorted((args.run / "checkpoints").glob("step_*.pt"))
    last = args.run / CHECKPOINT
    if not checkpoints or load_checkpoint(last)["step"] != load_checkpoint(checkpoints[-1])["step"]:
        checkpoints.append(last)  # the final weights, unless the last kept checkpoint has them
    print(f"{'step':>6}  " + "  ".join(f"{f:>6.0%}" for f in fractions))
    for path in checkpoints:
        state = load_checkpoint(path)
        task = build_task(recipe, tuple(train.image_shape), state.get("dataset_size"))
        task.load_state_dict(state["task"])
        backbone = task.backbone.eval()
        train_x, test_x = extract_features(backbone, train), extract_features(backbone, test)
        accuracies = []
        for fraction in fractions:
            idx = stratified_subset(train.labels, fraction, 0)
            subset = (train_x[idx], train.labels[idx], test_x, test.labels)
            accuracies.append(linear_probe_accuracy(*subset, seed=0, num_classes=num_classes))
        print(f"{state['step']:>6}  " + "  ".join(f"{a:>6.3f}" for a in accuracies), flush=True)


if __name__ == "__main__":
    main()
