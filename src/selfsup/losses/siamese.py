"""Losses of the two-branch methods with a momentum or stop-gradient target: MoCo, BYOL, SimSiam.

Neither loss has a term that couples samples of the batch (MoCo's negatives come from the queue,
which is the same on every rank), so under DDP each rank's mean over its own samples, averaged
by DDP, equals the single-process loss on the concatenated batch (tests/test_moco.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def queue_info_nce(
    query: torch.Tensor,
    key: torch.Tensor,
    queue: torch.Tensor,
    temperature: float = 0.2,
    exclude: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MoCo's InfoNCE: each query's positive is its own key, its negatives are the queue's keys.

    query, key: (B, D); queue: (K, D); exclude: (B, K) bool, True where a queued key is not a
    negative for that query (an older key of its own image). Returns (loss, accuracy), where
    accuracy is the fraction of queries whose positive outscores every negative. The key and
    queue get no gradient.
    """
    if query.shape != key.shape or query.ndim != 2 or queue.shape[1:] != query.shape[1:]:
        raise ValueError(
            f"query and key must be (B, D) and queue (K, D), got {tuple(query.shape)}, "
            f"{tuple(key.shape)} and {tuple(queue.shape)}"
        )
    q = F.normalize(query, dim=1)
    k = F.normalize(key.detach(), dim=1)
    negatives = F.normalize(queue.detach(), dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
    negative_logits = q @ negatives.T
    if exclude is not None:
        negative_logits = negative_logits.masked_fill(exclude, float("-inf"))
    logits = torch.cat([positive, negative_logits], dim=1).float() / temperature
    labels = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
    accuracy = (logits.argmax(dim=1) == 0).float().mean()
    return F.cross_entropy(logits, labels), accuracy


def negative_cosine(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-cos(p, stopgrad(z)) averaged over the batch; the target side never gets a gradient.

    SimSiam's loss is the symmetrised mean of two of these; BYOL's 2 - 2 cos is 2 + 2 * this.
    """
    p = F.normalize(prediction.float(), dim=1)
    z = F.normalize(target.detach().float(), dim=1)
    return -(p * z).sum(dim=1).mean()


def embedding_std(z: torch.Tensor) -> torch.Tensor:
    """Std over the batch of the unit-normalised embeddings, averaged over dimensions.

    A collapse monitor for losses without negatives (SimSiam, sec. 4.1): about 1 / sqrt(D)
    when the embeddings spread out, 0 when they have collapsed to a constant.
    """
    return F.normalize(z.detach().float(), dim=1).std(dim=0).mean()
