"""Downstream for video: which digits does a clip show? Multi-label, few labelled clips.

A clip's embedding is the mean of its frames' features (frames evenly spaced through the
clip). At each label budget (a seeded, nested subset of the labelled training clips) a
one-vs-rest logistic regression (and a kNN vote) on the embeddings scores every class, and two
numbers are read off the test clips:

  accuracy  the clip's digits are exactly its top-scoring classes (for Moving MNIST: both
            digits right, from 10 classes; chance is 1/45)
  map       mean average precision over the classes

Baselines at the same budgets: the same pipeline on raw pixels, on the randomly initialised
backbone, and the backbone trained from scratch on the labelled clips' frames (binary
cross-entropy per class; a frame shows the same digits as its clip). The `finetune` protocol
trains a copy of the pretrained backbone with that same recipe and budget, so it compares with
the supervised-from-scratch row as the papers compare their initialisation with a random one.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.data.base import TensorImageDataset
from selfsup.data.video import VideoDataset
from selfsup.errors import DataError, SelfSupError
from selfsup.evaluate.baselines import _logger, check_choices, random_init_backbone
from selfsup.evaluate.features import StepProgress, extract_features, raw_pixels
from selfsup.evaluate.finetune import default_epochs, freeze_first_stages, rescale_to_fresh
from selfsup.evaluate.linear import SINGLE_THREAD_BELOW, WEIGHT_DECAYS

PROTOCOLS = ("knn", "linear", "finetune")
BASELINES = ("raw", "random_init", "supervised")
EVAL_FRAMES = 10  # frames per clip that make its embedding
DEFAULT_WEIGHT_DECAY = 1e-2
MIN_CLIPS_FOR_SEARCH = 100  # below this a validation split only adds noise


def clip_frames(dataset: VideoDataset, frames: int = EVAL_FRAMES) -> TensorImageDataset:
    """`frames` evenly spaced frames of every clip, as one image dataset (clip-major order)."""
    index = torch.linspace(0, dataset.frames_per_clip - 1, min(frames, dataset.frames_per_clip))
    chosen = dataset.clips[:, index.round().long()]
    return TensorImageDataset(chosen.flatten(0, 1), name=dataset.name)


def clip_features(per_frame: torch.Tensor, num_clips: int) -> torch.Tensor:
    """Per-frame rows (N * F, D) in clip-major order -> clip embeddings (N, D), their mean."""
    return per_frame.view(num_clips, -1, per_frame.shape[-1]).mean(1)


def label_subset(num_clips: int, fraction: float, seed: int) -> torch.Tensor:
    """round(fraction * n) clips (at least one), nested across fractions for one seed."""
    if not 0 < fraction <= 1:
        raise SelfSupError(f"label fraction {fraction} is out of range; use values in (0, 1]")
    order = torch.randperm(num_clips, generator=torch.Generator().manual_seed(seed))
    take = max(1, math.floor(fraction * num_clips + 0.5))
    return torch.sort(order[:take]).values


def multilabel_metrics(scores: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """{"accuracy": share of rows whose positives are exactly their top-k scores (k = number
    of positives), "map": mean over classes of the average precision}."""
    from sklearn.metrics import average_precision_score

    targets = targets.bool()
    ranks = scores.argsort(1, descending=True).argsort(1)  # 0 = best score
    predicted = ranks < targets.sum(1, keepdim=True)
    accuracy = float((predicted == targets).all(1).float().mean())
    present = targets.any(0)  # AP is undefined for a class no test clip shows
    ap = average_precision_score(
        targets[:, present].numpy(), scores[:, present].numpy(), average="macro"
    )
    return {"accuracy": accuracy, "map": float(ap)}


def _standardise(train_x: torch.Tensor, test_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = train_x.mean(0), train_x.std(0, unbiased=False)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return (train_x - mean) / std, (test_x - mean) / std


def fit_multilabel(
    x: torch.Tensor, targets: torch.Tensor, weight_decay: float, max_iter: int = 200
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-vs-rest logistic regression, all classes in one L-BFGS fit: (weight (D, K), bias)."""
    weight = torch.zeros(x.shape[1], targets.shape[1], requires_grad=True)
    bias = torch.zeros(targets.shape[1], requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-5,  # probabilities to ~1e-5: far below what changes a ranking
        tolerance_change=1e-7,
        line_search_fn="strong_wolfe",
    )
    y = targets.float()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = x @ weight + bias
        loss = (
            F.binary_cross_entropy_with_logits(logits, y) + 0.5 * weight_decay * weight.pow(2).sum()
        )
        loss.backward()
        return loss

    threads = torch.get_num_threads()
    if x.numel() < SINGLE_THREAD_BELOW:  # tiny ops: thread sync costs more than it saves
        torch.set_num_threads(1)
    try:
        with torch.enable_grad():
            optimizer.step(closure)
    finally:
        torch.set_num_threads(threads)
    return weight.detach(), bias.detach()


def linear_scores(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, *, seed: int = 0
) -> torch.Tensor:
    """Class scores of the test clips from a one-vs-rest logistic regression on standardised
    features; the L2 strength is picked on a 20% validation split (mAP) when there are at
    least 100 labelled clips, else 1e-2."""
    train_x, test_x = _standardise(train_x.float().cpu(), test_x.float().cpu())
    train_y = train_y.cpu()
    weight_decay = DEFAULT_WEIGHT_DECAY
    if len(train_x) >= MIN_CLIPS_FOR_SEARCH:
        val = torch.zeros(len(train_x), dtype=torch.bool)
        val[label_subset(len(train_x), 0.2, seed + 1)] = True
        best = -1.0
        for wd in WEIGHT_DECAYS:
            params = fit_multilabel(train_x[~val], train_y[~val], wd, max_iter=50)
            score = multilabel_metrics(train_x[val] @ params[0] + params[1], train_y[val])["map"]
            if score > best:
                weight_decay, best = wd, score
    weight, bias = fit_multilabel(train_x, train_y, weight_decay)
    return test_x @ weight + bias


def knn_scores(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, *, k: int = 20
) -> torch.Tensor:
    """Class scores of the test clips: the label vectors of their k nearest training clips
    (cosine), summed with weight = similarity, so closer clips count more and ties are rare."""
    train_n, test_n = F.normalize(train_x.float(), dim=1), F.normalize(test_x.float(), dim=1)
    sims, nearest = (test_n @ train_n.T).topk(min(k, len(train_x)), dim=1)
    return (sims.unsqueeze(2) * train_y.float()[nearest]).sum(1)


def frame_training_scores(
    backbone: nn.Module,
    train: VideoDataset,
    clips: torch.Tensor,
    test_frames: TensorImageDataset,
    num_test_clips: int,
    *,
    seed: int = 0,
    steps: int | None = None,
    batch_size: int = 128,
    lr: float = 1e-3,
    freeze_stages: int = 0,
    rescale: bool = False,
    device: str | torch.device = "cpu",
    progress: str | None = None,
) -> torch.Tensor:
    """Scores of the test clips after training `backbone` (in place) with a linear head on
    single frames of the labelled `clips` (BCE). Default budget: `finetune`'s rule (see
    default_epochs) counted in clips, at least 100 and at most 1000 steps. `freeze_stages`,
    `rescale` and `progress`: as in `finetune`."""
    from selfsup.augment import light_augment

    targets = train.clip_labels[clips].float()
    batch_size = min(batch_size, len(clips))
    steps_per_epoch = max(1, len(clips) // batch_size)
    if steps is None:
        steps = min(1000, max(100, steps_per_epoch * default_epochs(len(clips))))
    device = torch.device(device)
    if rescale:
        rescale_to_fresh(backbone, train.image_shape, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(backbone.feature_dim, targets.shape[1])
        model = nn.Sequential(backbone, head).to(device).train()
        freeze_first_stages(backbone, freeze_stages)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps)
        generator = torch.Generator().manual_seed(seed)
        with StepProgress(progress, steps) as bar:
            for step in range(1, steps + 1):
                pick = torch.randint(len(clips), (batch_size,), generator=generator)
                frame = torch.randint(train.frames_per_clip, (batch_size,), generator=generator)
                x = train.clips[clips[pick], frame].to(device).float().div_(255)
                x = light_augment(x, generator=generator)
                loss = F.binary_cross_entropy_with_logits(model(x), targets[pick].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update(step)
        # A linear head on the mean frame feature is the mean of the frames' scores.
        features = extract_features(backbone, test_frames, device=device)
        return head.cpu()(clip_features(features, num_test_clips)).detach()


def supervised_scores(backbone_config: dict, *args, seed: int = 0, **kwargs) -> torch.Tensor:
    """frame_training_scores from a freshly initialised backbone: supervised from scratch."""
    from selfsup.backbones import build_backbone

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = build_backbone(**backbone_config)
    return frame_training_scores(backbone, *args, seed=seed, **kwargs)


def finetune_scores(pretrained: nn.Module, *args, **kwargs) -> torch.Tensor:
    """frame_training_scores from a copy of the pretrained backbone: the same recipe and budget
    as supervised_scores, so the two differ only in where the weights start."""
    return frame_training_scores(copy.deepcopy(pretrained), *args, **kwargs)


def _check(train, test, protocols, baselines) -> None:
    for dataset, split in ((train, "train"), (test, "test")):
        if not isinstance(dataset, VideoDataset) or dataset.clip_labels is None:
            raise DataError(
                f"the {split} data {dataset.name!r} has no clip labels; video evaluation needs "
                "labelled clips, e.g. --data moving-mnist:DIR"
            )
    check_choices(protocols, PROTOCOLS, baselines, BASELINES, " for video data")


def evaluate_video_backbone(
    backbone: nn.Module,
    train: VideoDataset,
    test: VideoDataset,
    *,
    protocols: Sequence[str] = PROTOCOLS,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    baselines: Sequence[str] = BASELINES,
    k: int = 20,
    seed: int = 0,
    freeze_stages: int = 0,
    rescale: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
    on_row: Callable[[dict], None] | None = None,
    finished: Mapping[tuple[str, str, float], dict] | None = None,
) -> dict:
    """Multi-label clip classification of `backbone` and its baselines at each label fraction.
    Fine-tuning keeps the first `freeze_stages` stages fixed; with `rescale` it first scales
    the convolutions back to a fresh network's weight norms (see
    selfsup.evaluate.finetune.rescale_to_fresh).

    Returns the same shape as `evaluate_backbone` ("rows" of method, protocol, fraction,
    n_labels, accuracy, seconds) with "map" in every row and "metric" naming the accuracy.
    `on_row` is called with each row as soon as it is measured; `finished` rows (by method,
    protocol, fraction) are taken as they are, as in `evaluate_backbone`.
    """
    protocols, baselines = tuple(protocols), tuple(baselines)
    _check(train, test, protocols, baselines)
    log = _logger(progress)
    train_frames, test_frames = clip_frames(train), clip_frames(test)
    n_train, n_test = train.num_clips, test.num_clips
    test_y = test.clip_labels

    def embed(encoder: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            clip_features(extract_features(encoder, train_frames, device=device), n_train),
            clip_features(extract_features(encoder, test_frames, device=device), n_test),
        )

    features = {"ssl": embed(backbone)}
    if "random_init" in baselines:
        features["random_init"] = embed(random_init_backbone(backbone, seed))
    if "raw" in baselines:
        features["raw"] = (
            clip_features(raw_pixels(train_frames), n_train),
            clip_features(raw_pixels(test_frames), n_test),
        )
    rows: list[dict] = []

    def record(method: str, protocol: str, fraction: float, n: int, fn, *args, **kwargs):
        if finished and (method, protocol, fraction) in finished:
            rows.append(finished[method, protocol, fraction])
            log(finished[method, protocol, fraction])
            return
        started = time.perf_counter()
        metrics = multilabel_metrics(fn(*args, **kwargs), test_y)
        row = {"method": method, "protocol": protocol, "fraction": fraction, "n_labels": n}
        row.update(metrics, seconds=round(time.perf_counter() - started, 3))
        rows.append(row)
        log(row)
        if on_row is not None:
            on_row(row)

    for fraction in fractions:
        clips = label_subset(n_train, fraction, seed)
        y = train.clip_labels[clips]
        probes = [p for p in protocols if p != "finetune"]
        methods = [("ssl", p) for p in probes]
        if "raw" in baselines:
            methods.append(("raw", "logreg"))
        if "random_init" in baselines:
            methods += [("random_init", p) for p in probes]
        for method, protocol in methods:
            train_x, test_x = features[method]
            data = (train_x[clips], y, test_x)
            if protocol == "knn":
                record(method, protocol, fraction, len(clips), knn_scores, *data, k=k)
            else:
                record(method, protocol, fraction, len(clips), linear_scores, *data, seed=seed)
        args = (train, clips, test_frames, n_test)
        labels = f"{fraction * 100:g}% ({len(clips)} labelled clips)"
        if "finetune" in protocols:
            record("ssl", "finetune", fraction, len(clips), finetune_scores, backbone, *args,
                   seed=seed, freeze_stages=freeze_stages, rescale=rescale, device=device,
                   progress=f"  fine-tune {labels}" if progress else None)  # fmt: skip
        if "supervised" in baselines:
            record("supervised", "train", fraction, len(clips), supervised_scores,
                   backbone.config, *args, seed=seed, device=device,
                   progress=f"  from scratch {labels}" if progress else None)  # fmt: skip

    return {
        "fractions": [float(f) for f in fractions],
        "rows": rows,
        "metric": "both digits right (the clip's digits are its top-scoring classes); map: mean AP",
        "test_size": n_test,
        "train_size": n_train,
        "feature_dim": int(features["ssl"][0].shape[1]),
        "k": k,
        "seed": seed,
    }
