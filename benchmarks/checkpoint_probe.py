"""Linear probe of the backbone in each kept checkpoint of a run: how features change in training.

    selfsup pretrain --recipe recipes/fmnist_gan_r1.yaml --out runs/pilot/gan_r1 \
        --steps 2400 --checkpoint-every 300 --keep-every 300
    python benchmarks/checkpoint_probe.py runs/pilot/gan_r1 --labels 1%,10%

For every checkpoints/step_N.pt (written with `keep_every`) and the final last.pt: logistic
regression on the backbone's features with the evaluation's label subsets (seed 0), scored on
the test split. Tells whether a run was still improving when its step budget ended, or fell
below the random network early and recovered.

    python benchmarks/checkpoint_probe.py runs/bench/fmnist_rotation_long --stages

`--stages` instead reads the global average of each stage's output of the final weights and of
the random network (the same architecture at seed 0, the evaluation's random-init baseline):
Gidaris et al. 2018 find RotNet's middle blocks transfer better than its last.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from video_probe import PooledStage  # benchmarks/, the folder of this script

from selfsup.engine import CHECKPOINT, load_checkpoint
from selfsup.evaluate import extract_features, linear_probe_accuracy, stratified_subset
from selfsup.evaluate.baselines import random_init_backbone
from selfsup.recipe import build_data, build_task, load_run
from selfsup.runs import trained_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run directory written by selfsup pretrain")
    parser.add_argument("--labels", default="1%,10%", help="label fractions, e.g. 1%%,10%%")
    parser.add_argument("--stages", action="store_true", help="every stage of the final weights")
    args = parser.parse_args()
    fractions = [float(f.rstrip("%")) / 100 for f in args.labels.split(",")]
    recipe = load_run(args.run)
    train, test = build_data(recipe, "train"), build_data(recipe, "test")
    num_classes = int(train.labels.max()) + 1

    def accuracies(backbone) -> str:
        backbone = backbone.eval()
        train_x, test_x = extract_features(backbone, train), extract_features(backbone, test)
        scores = []
        for fraction in fractions:
            idx = stratified_subset(train.labels, fraction, 0)
            subset = (train_x[idx], train.labels[idx], test_x, test.labels)
            scores.append(linear_probe_accuracy(*subset, seed=0, num_classes=num_classes))
        return "  ".join(f"{a:>6.3f}" for a in scores)

    header = "  ".join(f"{f:>6.0%}" for f in fractions)
    if args.stages:
        final = trained_task(args.run, tuple(train.image_shape)).backbone
        print(f"{'backbone':<8} {'stage':>5}  {header}")
        for name, backbone in (("run", final), ("random", random_init_backbone(final, 0))):
            for stages in range(1, len(backbone.stages()) + 1):
                print(
                    f"{name:<8} {stages:>5}  {accuracies(PooledStage(backbone, stages))}",
                    flush=True,
                )
        return
    checkpoints = sorted((args.run / "checkpoints").glob("step_*.pt"))
    last = args.run / CHECKPOINT
    if not checkpoints or load_checkpoint(last)["step"] != load_checkpoint(checkpoints[-1])["step"]:
        checkpoints.append(last)  # the final weights, unless the last kept checkpoint has them
    print(f"{'step':>6}  {header}")
    for path in checkpoints:
        state = load_checkpoint(path)
        task = build_task(recipe, tuple(train.image_shape), state.get("dataset_size"))
        task.load_state_dict(state["task"])
        print(f"{state['step']:>6}  {accuracies(task.backbone)}", flush=True)


if __name__ == "__main__":
    main()
