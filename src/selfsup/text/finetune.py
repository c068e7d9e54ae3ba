"""Few-label text classification: a linear head on a text backbone, and the classic baselines.

- `finetune_text`: linear head on `backbone.features` ([CLS] state of an encoder, final
  token's state of a decoder, as BERT and GPT do), whole model or lower layers frozen.
  The same function trains the from-scratch baseline (a freshly initialised copy), so both
  get one budget: the same steps, batch size and learning-rate schedule.
  `train_text_classifier` is its training, returning the model `selfsup finetune` keeps.
- `text_features` + logistic regression: the frozen (linear probe / averaged word2vec) path,
  on mean-pooled final states.
- `tfidf_accuracy`: TF-IDF of words and bigrams + logistic regression on the raw strings.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.text.data import LabeledText


@torch.no_grad()
def text_features(
    backbone: nn.Module,
    data: LabeledText,
    device: str = "cpu",
    batch_size: int = 256,
    pool: str | None = "mean",
) -> torch.Tensor:
    """(N, dim) frozen features of every text, in order: by default the mean of the final
    states over the real tokens (see TextTransformer.features; word vectors are always
    averaged)."""
    backbone = backbone.to(device).eval()
    # Sorting by length keeps padding (wasted compute) small; the order is restored after.
    order = torch.argsort(data.texts.lengths())
    out = torch.empty(len(data), backbone.feature_dim)
    for start in range(0, len(data), batch_size):
        idx = order[start : start + batch_size]
        tokens = data.get_batch(idx)["tokens"].to(device)
        out[idx] = backbone.features(tokens, pool=pool).float().cpu()
    return out


C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def _logistic_regression(c: float, choose_c: bool):
    """scikit-learn's L2 logistic regression with inverse strength `c`, or, with `choose_c`,
    the C of C_GRID that 5-fold cross-validation on the training rows scores best."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

    if choose_c:
        return LogisticRegressionCV(Cs=list(C_GRID), cv=5, max_iter=3000, scoring="accuracy")
    return LogisticRegression(max_iter=2000, C=c)


def _fit_quietly(model, x, y):
    # scikit-learn 1.9 announces changes to LogisticRegressionCV's defaults; the arguments
    # above pin what this protocol uses, so the notices say nothing about it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return model.fit(x, y)


def logistic_regression_accuracy(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    choose_c: bool = False,
) -> float:
    """Standardised features + L2 logistic regression (C=1, or cross-validated: see
    _logistic_regression)."""
    model = fit_logistic_regression(train_x, train_y, choose_c=choose_c)
    return float((model.predict(test_x.numpy()) == test_y.numpy()).mean())


def fit_logistic_regression(
    train_x: torch.Tensor, train_y: torch.Tensor, *, choose_c: bool = False
):
    """The fitted scikit-learn pipeline logistic_regression_accuracy scores: standardised
    features, then L2 logistic regression."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), _logistic_regression(1.0, choose_c))
    return _fit_quietly(model, train_x.numpy(), train_y.numpy())


def logistic_regression_layer(model) -> nn.Linear:
    """A fit_logistic_regression pipeline as one nn.Linear over the raw features, giving the
    same class probabilities: the standardisation folds into the weights (w / scale) and the
    bias (b - w . mean / scale). A binary model's one logit z becomes the two logits (0, z),
    whose softmax is scikit-learn's (1 - sigmoid(z), sigmoid(z))."""
    scaler, regression = model[0], model[-1]
    weight = torch.as_tensor(regression.coef_, dtype=torch.float64)
    bias = torch.as_tensor(regression.intercept_, dtype=torch.float64)
    if weight.shape[0] == 1:
        weight = torch.cat([torch.zeros_like(weight), weight])
        bias = torch.cat([torch.zeros_like(bias), bias])
    scale = torch.as_tensor(scaler.scale_, dtype=torch.float64)
    mean = torch.as_tensor(scaler.mean_, dtype=torch.float64)
    weight = weight / scale
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias - weight @ mean)
    return layer


def tfidf_accuracy(train: LabeledText, test: LabeledText, *, choose_c: bool = False) -> float:
    """Bag-of-words baseline on the raw strings (no tokenizer, no pretraining); C=10, or
    cross-validated like logistic_regression_accuracy's."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)
    x = vectorizer.fit_transform(train.raw)
    model = _fit_quietly(_logistic_regression(10.0, choose_c), x, train.labels.numpy())
    predicted = model.predict(vectorizer.transform(test.raw))
    return float((predicted == test.labels.numpy()).mean())


def budget_steps(n_labels: int, batch_size: int, epochs: float, max_steps: int) -> int:
    """Fine-tuning steps for a label budget: `epochs` passes, at least 50, at most max_steps."""
    return int(min(max_steps, max(50, math.ceil(epochs * n_labels / batch_size))))


def finetune_text(
    backbone: nn.Module, train: LabeledText, test: LabeledText, **options: Any
) -> float:
    """Test accuracy after training a copy of `backbone` + a linear head; options as in
    train_text_classifier. The caller's backbone is never modified."""
    model, head = train_text_classifier(backbone, train, test, **options)
    return text_accuracy(model, head, test, options.get("device", "cpu"))


def train_text_classifier(
    backbone: nn.Module,
    train: LabeledText,
    test: LabeledText,
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-4,
    weight_decay: float = 0.01,
    freeze_stages: int = 0,
    seed: int = 0,
    device: str = "cpu",
    progress: str | None = None,
) -> tuple[nn.Module, nn.Linear]:
    """(a trained copy of `backbone` in eval mode, its linear head on `backbone.features`):
    the whole model, or all but the first `freeze_stages` stages, trained for `steps` steps.

    AdamW with 10% linear warmup and linear decay (BERT's fine-tuning schedule). The caller's
    backbone is never modified. `test` only sizes the head (its classes are train's, in
    train's order). `progress`: a label to show the steps under (see
    selfsup.evaluate.features.StepProgress); None: quiet.
    """
    from selfsup.evaluate.features import StepProgress

    torch.manual_seed(seed)
    model = copy.deepcopy(backbone).to(device).train()
    for stage in model.stages()[:freeze_stages]:
        for p in stage.parameters():
            p.requires_grad_(False)
    classes = int(max(train.labels.max(), test.labels.max())) + 1
    head = nn.Linear(model.feature_dim, classes).to(device)
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / (steps - warmup + 1)))
    )
    generator = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.long)
    with StepProgress(progress, steps) as bar:
        for step in range(1, steps + 1):
            if order.numel() < batch_size:  # a fresh permutation per epoch
                order = torch.cat([order, torch.randperm(len(train), generator=generator)])
            idx, order = order[:batch_size], order[batch_size:]
            batch = train.get_batch(idx)
            logits = head(model.features(batch["tokens"].to(device)))
            loss = F.cross_entropy(logits, batch["labels"].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update(step)
    return model.eval(), head.eval()


@torch.no_grad()
def text_logits(
    backbone: nn.Module,
    head: nn.Module,
    data: LabeledText,
    device: str = "cpu",
    pool: str | None = None,
) -> torch.Tensor:
    """(N, classes) float logits of `head` on `backbone.features` of every text, on the CPU;
    `pool` as in features ("mean": what text_features, and so a linear probe, reads).

    In order, 256 texts a batch, each padded to its longest: the batches fine-tuning was
    scored on, so a saved classifier applied to the same texts gives the same numbers.
    """
    return torch.cat(
        [
            head(backbone.features(data.get_batch(idx)["tokens"].to(device), pool=pool))
            .float()
            .cpu()
            for idx in torch.arange(len(data)).split(256)
        ]
    )


def text_accuracy(
    backbone: nn.Module, head: nn.Module, test: LabeledText, device: str, pool: str | None = None
) -> float:
    """The fraction of `test` whose likeliest class (text_logits) is its label."""
    predicted = text_logits(backbone, head, test, device, pool).argmax(1)
    # Counted, not averaged in float32: the fraction predict reports for the same texts.
    return int((predicted == test.labels).sum()) / len(test)
