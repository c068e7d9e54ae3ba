"""The evaluation protocol: SSL features beside their baselines at every label budget.

For each label fraction (a stratified, seeded subset of the training labels, nested across
fractions) it measures the pretrained backbone with kNN / linear probe / fine-tuning, and at
the same budget: raw pixels (kNN and logistic regression), the same architecture randomly
initialised (kNN and linear), and the same architecture trained supervised from scratch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from selfsup.data.base import ImageDataset
from selfsup.errors import DataError, SelfSupError
from selfsup.evaluate.features import extract_features, raw_pixels
from selfsup.evaluate.finetune import finetune_accuracy, supervised_from_scratch_accuracy
from selfsup.evaluate.knn import knn_accuracy
from selfsup.evaluate.labels import require_two_classes, stratified_subset, subset_dataset
from selfsup.evaluate.linear import linear_probe_accuracy

PROTOCOLS = ("knn", "linear", "finetune")
BASELINES = ("raw", "random_init", "supervised")


def random_init_backbone(backbone: nn.Module, seed: int = 0) -> nn.Module:
    """The same architecture as `backbone`, freshly built with torch.manual_seed(seed)."""
    config = getattr(backbone, "config", None)
    if not isinstance(config, dict):
        raise SelfSupError(
            "the random-init and supervised baselines need a backbone with a .config dict "
            "(selfsup backbones have one); otherwise leave them out of baselines"
        )
    from selfsup.backbones import build_backbone

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_backbone(**config)


def check_choices(protocols, known_protocols, baselines, known_baselines, where: str = "") -> None:
    """One-line error for the first protocol or baseline not in its known list."""
    for name, given, known in (
        ("protocol", protocols, known_protocols),
        ("baseline", baselines, known_baselines),
    ):
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise SelfSupError(
                f"unknown {name} {unknown[0]!r}{where}; choose from {', '.join(known)}"
            )


def _check_inputs(train: ImageDataset, test: ImageDataset, protocols, baselines, fractions):
    for ds, split in ((train, "train"), (test, "test")):
        if len(ds) == 0 or not ds.has_labels:
            raise DataError(
                f"the {split} dataset {ds.name!r} is empty or has unlabelled samples; "
                "evaluation needs a fully labelled train and test split"
            )
    require_two_classes(train.labels, repr(train.name), "folder:DIR takes one sub-folder per class")
    if train.image_shape != test.image_shape:
        raise DataError(
            f"train images are {train.image_shape} but test images {test.image_shape}; "
            "use two splits of the same dataset"
        )
    check_choices(protocols, PROTOCOLS, baselines, BASELINES)
    for f in fractions:
        if not 0 < f <= 1:
            raise SelfSupError(f"label fraction {f} is out of range; use values in (0, 1]")


def _features_pair(
    backbone: nn.Module, train: ImageDataset, test: ImageDataset, device
) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        extract_features(backbone, train, device=device).to(device),
        extract_features(backbone, test, device=device).to(device),
    )


def _logger(progress: bool) -> Callable[[dict], None]:
    if not progress:
        return lambda row: None
    from rich.console import Console

    console = Console(stderr=True, highlight=False)

    def log(row: dict) -> None:
        console.print(
            f"  {row['method']:<11} {row['protocol']:<8} {row['fraction'] * 100:>6g}% "
            f"({row['n_labels']:>6} labels)  accuracy [bold]{row['accuracy']:.4f}[/bold]  "
            f"[dim]{row['seconds']:.1f}s[/dim]"
        )

    return log


def evaluate_backbone(
    backbone: nn.Module,
    train: ImageDataset,
    test: ImageDataset,
    *,
    protocols: Sequence[str] = ("knn", "linear"),
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    baselines: Sequence[str] = ("raw", "random_init", "supervised"),
    k: int = 20,
    freeze_stages: int = 0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    finetune_options: dict | None = None,
    features: tuple[torch.Tensor, torch.Tensor] | None = None,
    on_row: Callable[[dict], None] | None = None,
    finished: Mapping[tuple[str, str, float], dict] | None = None,
) -> dict:
    """Accuracy of `backbone` and its baselines at each label fraction, as a JSON-able dict.

    Returns {"fractions", "rows", "test_size", "train_size", "feature_dim", "num_classes",
    "k", "seed"}; each row is {"method", "protocol", "fraction", "n_labels", "accuracy",
    "seconds"} with method in ssl/raw/random_init/supervised and protocol in
    knn/linear/finetune/logreg/train. `finetune_options` (epochs, steps, lr, ...) go to both
    fine-tuning and supervised-from-scratch so they always share one budget. `features`:
    the backbone's (train, test) features when the caller already extracted them. `on_row` is
    called with each row as soon as it is measured (selfsup evaluate keeps them on disk).
    `finished`: rows an interrupted run of the same evaluation measured, by (method, protocol,
    fraction); they are taken as they are instead of measured again.
    """
    protocols, baselines = tuple(protocols), tuple(baselines)
    fractions = [float(f) for f in fractions]
    _check_inputs(train, test, protocols, baselines, fractions)
    log = _logger(progress)
    num_classes = max(int(train.labels.max()), int(test.labels.max())) + 1
    train_y, test_y = train.labels, test.labels
    train_opts = dict(finetune_options or {}, seed=seed, device=device)
    rows: list[dict] = []

    def record(method: str, protocol: str, f: float, n: int, fn: Callable, *args, **kwargs):
        if finished and (method, protocol, f) in finished:
            rows.append(finished[method, protocol, f])
            log(finished[method, protocol, f])
            return
        start = time.perf_counter()
        accuracy = float(fn(*args, **kwargs))
        row = {
            "method": method,
            "protocol": protocol,
            "fraction": f,
            "n_labels": n,
            "accuracy": accuracy,
            "seconds": round(time.perf_counter() - start, 3),
        }
        rows.append(row)
        log(row)
        if on_row is not None:
            on_row(row)

    # Frozen features are computed once on all training images; each budget only picks rows.
    frozen = [p for p in protocols if p in ("knn", "linear")]
    given, features = features, {}
    if frozen:
        features["ssl"] = (
            tuple(f.to(device) for f in given)
            if given is not None
            else _features_pair(backbone, train, test, device)
        )
    feature_dim = int(getattr(backbone, "feature_dim", 0)) or (
        features["ssl"][0].shape[1] if features else 0
    )
    if "random_init" in baselines:
        features["random_init"] = _features_pair(
            random_init_backbone(backbone, seed), train, test, device
        )
    if "raw" in baselines:
        features["raw"] = (raw_pixels(train).to(device), raw_pixels(test).to(device))
    if "supervised" in baselines:
        random_init_backbone(backbone, seed)  # fail now, not after an hour, if it cannot build

    def frozen_rows(method: str, kinds: dict[str, str], f: float, idx: torch.Tensor) -> None:
        train_x, test_x = features[method]
        x, y = train_x[idx.to(train_x.device)], train_y[idx].to(train_x.device)
        for protocol, fit in kinds.items():
            fn = knn_accuracy if fit == "knn" else linear_probe_accuracy
            options = {"k": k} if fit == "knn" else {"seed": seed}
            data = (x, y, test_x, test_y)
            record(method, protocol, f, len(idx), fn, *data, num_classes=num_classes, **options)

    def bar(what: str, f: float, n: int) -> str | None:
        """The label a training row shows its steps under (see StepProgress)."""
        return f"  {what} {f * 100:g}% ({n} labels)" if progress else None

    for f in fractions:
        idx = stratified_subset(train_y, f, seed)
        n = len(idx)
        if frozen:
            frozen_rows("ssl", {p: p for p in frozen}, f, idx)
        labelled = subset_dataset(train, idx)
        if "finetune" in protocols:
            args = (backbone, labelled, test)
            record("ssl", "finetune", f, n, finetune_accuracy, *args,
                   freeze_stages=freeze_stages, progress=bar("fine-tune", f, n),
                   **train_opts)  # fmt: skip
        if "raw" in baselines:
            frozen_rows("raw", {"knn": "knn", "logreg": "linear"}, f, idx)
        if "random_init" in baselines:
            frozen_rows("random_init", {"knn": "knn", "linear": "linear"}, f, idx)
        if "supervised" in baselines:
            args = (backbone.config, labelled, test)
            record("supervised", "train", f, n, supervised_from_scratch_accuracy, *args,
                   progress=bar("from scratch", f, n), **train_opts)  # fmt: skip

    return {
        "fractions": fractions,
        "rows": rows,
        "test_size": len(test),
        "train_size": len(train),
        "feature_dim": feature_dim,
        "num_classes": num_classes,
        "k": k,
        "seed": seed,
    }
