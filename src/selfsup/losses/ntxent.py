"""NT-Xent, the normalized temperature-scaled cross-entropy of SimCLR (Chen et al. 2020).

Under DDP every rank scores its own anchors against the keys of *all* ranks, gathered with a
gradient-carrying all_gather. Each rank's loss is the mean over its local anchors; DDP's
gradient averaging then equals the gradient of the single-process loss on the concatenated
batch (tested in tests/test_losses.py with two gloo processes).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every rank along dim 0, rank order; gradients flow back to each rank.

    A no-op outside distributed training.
    """
    if not _distributed():
        return x
    from torch.distributed.nn.functional import all_gather

    gathered = torch.cat(all_gather(x), dim=0)
    if gathered.requires_grad:
        # all_gather's backward hands each rank its slice of the gradient, and a non-contiguous
        # gradient (e.g. from an einsum) came back wrong under gloo (tests/test_losses.py).
        gathered.register_hook(lambda grad: grad.contiguous())
    return gathered


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's loss for a batch of positive pairs (z1[i], z2[i]).

    Each of the 2B embeddings is an anchor whose positive is its pair and whose negatives are
    the other 2B - 2 embeddings (gathered across ranks). Embeddings need not be normalised.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(
            f"z1 and z2 must both be (B, D), got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    local = F.normalize(torch.cat([z1, z2]), dim=1)  # (2B, D): views 1 then views 2
    batch = z1.shape[0]
    rank = dist.get_rank() if _distributed() else 0

    # Keys from all ranks, laid out [rank0 v1, rank0 v2, rank1 v1, rank1 v2, ...].
    keys = gather_with_grad(local)
    logits = local @ keys.T / temperature  # (2B, 2B * world)

    offset = 2 * batch * rank
    own = torch.arange(2 * batch, device=local.device) + offset
    positive = torch.cat([own[batch:], own[:batch]])  # view 1 <-> view 2 of the same image
    # An anchor is never its own negative.
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[torch.arange(2 * batch, device=local.device), own] = True
    logits = logits.masked_fill(self_mask, float("-inf"))
    return F.cross_entropy(logits.float(), positive)


def paired_info_nce(
    queries: torch.Tensor, keys: torch.Tensor, temperature: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """CPC's InfoNCE (van den Oord et al. 2018) for aligned queries and keys: query i's
    positive is key i, every other key (gathered across ranks) a negative; both are
    L2-normalised. Returns (loss, top-1 accuracy of the local queries, detached).

    (N, D) tensors: every key is a candidate for every query. (N, G, D) tensors: G separate
    contests, query (i, g) against the keys (., g) only, e.g. one per place in a feature map so
    that the place cannot tell the candidates apart. Every rank must hold the same N (all_gather
    needs equal shapes)."""
    if queries.shape != keys.shape or queries.ndim not in (2, 3):
        raise ValueError(
            f"queries and keys must both be (N, D) or (N, G, D), got {tuple(queries.shape)} "
            f"and {tuple(keys.shape)}"
        )
    q, k = F.normalize(queries, dim=-1), F.normalize(keys, dim=-1)
    if q.ndim == 2:
        q, k = q.unsqueeze(1), k.unsqueeze(1)
    rank = dist.get_rank() if _distributed() else 0
    # logits[g, i, j]: query (i, g) against key (j, g) of the whole gathered batch.
    logits = (torch.einsum("igd,jgd->gij", q, gather_with_grad(k)) / temperature).float()
    groups, n = logits.shape[:2]
    positive = (torch.arange(n, device=q.device) + rank * n).repeat(groups)
    logits = logits.flatten(0, 1)
    accuracy = (logits.detach().argmax(1) == positive).float().mean()
    return F.cross_entropy(logits, positive), accuracy
