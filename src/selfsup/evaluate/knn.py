"""Weighted k-nearest-neighbour classification on frozen features.

Cosine similarity and temperature-weighted votes exp(sim / T), as in Wu et al. 2018,
"Unsupervised Feature Learning via Non-Parametric Instance Discrimination" (k=200, T=0.07 there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.errors import SelfSupError

# Similarity entries per chunk (float32): 2**25 is 128 MB whatever the train set size.
_CHUNK_ELEMENTS = 2**25


def _check_pair(x: torch.Tensor, y: torch.Tensor, what: str) -> None:
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise SelfSupError(
            f"{what}: features must be (N, D) and labels (N,), got {tuple(x.shape)} and "
            f"{tuple(y.shape)}; pass one label per feature row"
        )


def knn_predict(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
) -> torch.Tensor:
    """Predicted labels (M,) for test_x, computed in chunks on train_x's device."""
    if k < 1:
        raise SelfSupError(f"kNN needs k >= 1 neighbours, got {k}")
    if train_x.shape[0] == 0:
        raise SelfSupError("kNN needs at least one labelled training sample; use more labels")
    if train_x.shape[1] != test_x.shape[1]:
        raise SelfSupError(
            f"kNN: train features have {train_x.shape[1]} dims but test features "
            f"{test_x.shape[1]}; extract both with the same backbone"
        )
    device = train_x.device
    train_y = train_y.to(device)
    if num_classes is None:
        num_classes = int(train_y.max()) + 1
    k = max(1, min(int(k), train_x.shape[0]))
    bank = F.normalize(train_x.float(), dim=1)
    chunk = max(1, _CHUNK_ELEMENTS // bank.shape[0])
    predictions = []
    for start in range(0, test_x.shape[0], chunk):
        queries = F.normalize(test_x[start : start + chunk].to(device).float(), dim=1)
        sims, idx = (queries @ bank.T).topk(k, dim=1)
        # exp((s - 1) / T) has the same argmax as exp(s / T) and cannot overflow for tiny T.
        weights = torch.exp((sims - 1.0) / temperature)
        votes = torch.zeros(queries.shape[0], num_classes, device=device)
        votes.scatter_add_(1, train_y[idx], weights)
        predictions.append(votes.argmax(dim=1))
    if not predictions:
        return torch.zeros(0, dtype=torch.int64, device=device)
    return torch.cat(predictions)


def knn_accuracy(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
) -> float:
    """Top-1 accuracy of a temperature-weighted cosine kNN classifier (Wu et al. 2018)."""
    _check_pair(train_x, train_y, "kNN train set")
    _check_pair(test_x, test_y, "kNN test set")
    if num_classes is None:
        num_classes = int(max(int(train_y.max()), int(test_y.max()))) + 1
    pred = knn_predict(
        train_x, train_y, test_x, k=k, temperature=temperature, num_classes=num_classes
    )
    return float((pred.cpu() == test_y.cpu()).float().mean()) if test_y.numel() else 0.0


@torch.no_grad()
def nearest_neighbor_grid(
    train_feats: torch.Tensor,
    train_dataset,
    test_feats: torch.Tensor,
    test_dataset,
    n_queries: int = 8,
    k: int = 5,
) -> dict:
    """A few test queries and their top-k train neighbours by cosine similarity, for the report.

    Queries are spread evenly over the test set (deterministic). Returns uint8 "queries"
    (Q, C, H, W), "neighbors" (Q, k, C, H, W), "query_labels" (Q,), "neighbor_labels" (Q, k),
    "similarities" (Q, k), "query_indices" (Q,), "neighbor_indices" (Q, k) and "classes"
    (names or None); `write_report` draws it.
    """
    n_queries = max(1, min(n_queries, test_feats.shape[0]))
    k = max(1, min(k, train_feats.shape[0]))
    query_idx = torch.linspace(0, test_feats.shape[0] - 1, n_queries).round().long().unique()
    bank = F.normalize(train_feats.float(), dim=1)
    queries = F.normalize(test_feats[query_idx].to(bank.device).float(), dim=1)
    sims, idx = (queries @ bank.T).topk(k, dim=1)
    idx = idx.cpu()
    neighbors = train_dataset.get_batch(idx.flatten())
    return {
        "queries": test_dataset.get_batch(query_idx),
        "neighbors": neighbors.reshape(idx.shape[0], k, *neighbors.shape[1:]),
        "query_labels": test_dataset.labels[query_idx],
        "neighbor_labels": train_dataset.labels[idx],
        "similarities": sims.cpu(),
        "query_indices": query_idx,
        "neighbor_indices": idx,
        "classes": getattr(train_dataset, "classes", None),
    }
