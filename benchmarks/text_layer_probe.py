"""Linear probe of every layer of a pretrained text Transformer, at one label fraction.

    python benchmarks/text_layer_probe.py sst2_mlm_rotary sst2_clm_long --labels 1%

For each finished run in runs/bench/NAME: the mean over real tokens of the token embeddings
(layer 0), of each block's output, and of the final (normed) states, each with logistic
regression on the same stratified label subset the evaluation uses (seed 0), scored on the
run's evaluation test split; then all layers concatenated. Answers whether a lower layer holds
more of the downstream label than the last one, which the linear-probe rows read.

`--draws N` averages over the label draws of seeds 0..N-1, `--choose-c` picks each logistic
regression's C by 5-fold cross-validation (as text_label_draws.py does), and `--untrained`
probes the run's architecture freshly initialised instead (its token embeddings started from
the run's `word_vectors` if its recipe names them): what pretraining changed.
"""

from __future__ import annotations

import argparse

import torch
from run_benchmarks import bench_run, untrained_twin  # benchmarks/, this script's folder

from selfsup.backbones.transformer import mean_over_tokens
from selfsup.evaluate.labels import stratified_subset
from selfsup.recipe import load_run
from selfsup.runs import run_backbone
from selfsup.text.build import labeled_splits
from selfsup.text.data import LabeledText
from selfsup.text.finetune import logistic_regression_accuracy
from selfsup.text.tokenizer import load_tokenizer


@torch.no_grad()
def layer_features(backbone, data: LabeledText, batch_size: int = 256) -> torch.Tensor:
    """(N, depth + 2, dim): mean-pooled embeddings, each block's output, the final states."""
    states: list[torch.Tensor] = []
    modules = [backbone.embed, *backbone.blocks]
    hooks = [m.register_forward_hook(lambda _m, _i, out: states.append(out)) for m in modules]
    try:
        order = torch.argsort(data.texts.lengths())
        out = torch.empty(len(data), len(modules) + 1, backbone.feature_dim)
        for start in range(0, len(data), batch_size):
            idx = order[start : start + batch_size]
            tokens = data.get_batch(idx)["tokens"]
            states.clear()
            final = backbone(tokens)
            pooled = [mean_over_tokens(h, tokens) for h in [*states, final]]
            out[idx] = torch.stack(pooled, 1)
        return out
    finally:
        for hook in hooks:
            hook.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="text runs in runs/bench/")
    parser.add_argument("--labels", default="1%", help="label fraction, e.g. 1%% or 0.1")
    parser.add_argument("--draws", type=int, default=1, help="label draws (seeds 0..N-1)")
    parser.add_argument("--choose-c", action="store_true", help="cross-validate C")
    parser.add_argument("--untrained", action="store_true", help="probe a fresh initialisation")
    args = parser.parse_args()
    fraction = float(args.labels.rstrip("%")) / (100 if args.labels.endswith("%") else 1)
    for name in args.names:
        run = bench_run(name)
        recipe, tokenizer = load_run(run), load_tokenizer(run)
        backbone = run_backbone(run)
        if args.untrained:
            backbone = untrained_twin(backbone, recipe)
        backbone.eval()
        spec = recipe.evaluate.get("data", recipe.data)
        train, test = labeled_splits(spec, recipe, tokenizer, backbone)
        train_x, test_x = layer_features(backbone, train), layer_features(backbone, test)
        names = ["embeddings", *[f"block {i + 1}" for i in range(len(backbone.blocks))], "final"]
        reads = {label: [layer] for layer, label in enumerate(names)}
        reads["all layers"] = list(range(len(names)))
        scores: dict[str, list[float]] = {label: [] for label in reads}
        for seed in range(args.draws):
            idx = stratified_subset(train.labels, fraction, seed)
            for label, layers in reads.items():
                scores[label].append(logistic_regression_accuracy(
                    train_x[idx][:, layers].flatten(1), train.labels[idx],
                    test_x[:, layers].flatten(1), test.labels, choose_c=args.choose_c,
                ))  # fmt: skip
        state = "untrained" if args.untrained else "pretrained"
        print(f"{name} ({state}): {len(idx)} labels, accuracy on {len(test)} test texts, "
              f"mean over {args.draws} draw(s)")  # fmt: skip
        for label, values in scores.items():
            print(f"  {label:<12} {sum(values) / len(values):.3f}")


if __name__ == "__main__":
    main()
