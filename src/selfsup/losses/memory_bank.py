"""A memory bank of one embedding per dataset image, and the contrastive loss against it.

Used by NPID (Wu et al., CVPR 2018) and PIRL (Misra & van der Maaten, CVPR 2020): every image
has a running-average embedding m_I in the bank; a query is scored against its own row (the
positive) and against rows of other images (the negatives), so the number of negatives is not
tied to the batch size.

Two objectives, chosen by `objective`:

- "infonce" (default): softmax cross-entropy over [positive, negatives], i.e. InfoNCE, the
  common re-implementation (VISSL's `loss_type: cross_entropy`). Stable at any temperature.
- "nce": the papers' noise-contrastive estimation. P(i|q) = exp(q.m_i / t) / Z, with the
  partition function Z estimated once from the first batch (Z = N * mean exp) and then frozen,
  noise distribution P_n = 1/N; each pair is a binary "data or noise?" decision:
  loss = -log h(pos) - sum_neg log(1 - h(neg)), h = P / (P + K * P_n). Computed in log space.

The negatives are shared by the whole batch (as in MoCo's queue) rather than drawn per query,
which turns a (B, K, D) gather into one (K, D) matrix product; each query still sees K rows
drawn uniformly from the images outside the local batch.

Under DDP the bank must stay identical on every rank: `update` all-gathers the indices and
embeddings of every rank first, and Z is estimated from the global first batch. The bank is a
registered buffer, so it is in the task's state_dict and survives checkpoint + resume.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from selfsup.errors import SelfSupError

OBJECTIVES = ("infonce", "nce")


def _world() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every rank along dim 0 in rank order, without gradient."""
    if _world() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(_world())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def contrast_logits(
    queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, temperature: float
) -> torch.Tensor:
    """(B, 1 + K) cosine logits / temperature: column 0 is query i against positives[i], the
    rest against each of the K shared negatives. Inputs are L2-normalised (B, D), (B, D), (K, D).
    """
    positive = (queries * positives).sum(dim=1, keepdim=True)
    return torch.cat([positive, queries @ negatives.T], dim=1).float() / temperature


def info_nce(logits: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy with the positive in column 0, mean over the batch."""
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def binary_nce(logits: torch.Tensor, log_z: float | torch.Tensor, bank_size: int) -> torch.Tensor:
    """NPID / PIRL's NCE loss for (B, 1 + K) logits, mean over the batch (sum over negatives).

    log P = logit - log Z; with log(K P_n) = log(K / N): log h = log P - logaddexp(log P, log K P_n)
    and log(1 - h) = log K P_n - logaddexp(log P, log K P_n).
    """
    k = logits.shape[1] - 1
    log_p = logits - log_z
    log_noise = torch.full_like(log_p, math.log(k / bank_size))
    denominator = torch.logaddexp(log_p, log_noise)
    data_term = log_p[:, 0] - denominator[:, 0]
    noise_term = (log_noise[:, 1:] - denominator[:, 1:]).sum(dim=1)
    return -(data_term + noise_term).mean()


class MemoryBank(nn.Module):
    """`size` L2-normalised rows of `dim` numbers, one per dataset image, plus NCE's log Z."""

    def __init__(self, size: int, dim: int = 128, momentum: float = 0.5) -> None:
        super().__init__()
        if size < 2:
            raise SelfSupError(
                f"a memory bank needs at least 2 images (one row each), got {size}; "
                "use a larger dataset"
            )
        if not 0.0 <= momentum < 1.0:
            raise SelfSupError(f"memory bank momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        # Random unit vectors (torch's global RNG, seeded by the run): uniform on the sphere.
        self.register_buffer("rows", F.normalize(torch.randn(size, dim), dim=1))
        # NaN until the first NCE batch estimates it; a buffer so resume keeps the same Z.
        self.register_buffer("log_z", torch.tensor(float("nan")))

    @property
    def size(self) -> int:
        return self.rows.shape[0]

    @torch.no_grad()
    def update(self, indices: torch.Tensor, embeddings: torch.Tensor) -> None:
        """rows[i] <- normalize(m * rows[i] + (1 - m) * f_i) for the batch of every rank.

        `embeddings` are expected L2-normalised (as NPID and PIRL make them); indices must be
        distinct across the global batch, as every batch of the engine's epochs is.
        """
        indices = _gather(indices.to(self.rows.device, torch.long))
        embeddings = _gather(embeddings.detach().to(self.rows))
        if indices.unique().numel() != indices.numel():
            raise ValueError("memory bank update: the batch holds the same index twice")
        m = self.momentum
        mixed = m * self.rows[indices] + (1 - m) * embeddings
        self.rows.index_copy_(0, indices, F.normalize(mixed, dim=1))

    @torch.no_grad()
    def negatives(self, n: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """Indices of n distinct random rows (torch's global RNG), none of them in `exclude`.

        n is capped at the number of rows left; an empty pool is an error.
        """
        allowed = torch.ones(self.size, dtype=torch.bool, device=self.rows.device)
        if exclude is not None:
            allowed[exclude.to(self.rows.device, torch.long)] = False
        pool = allowed.nonzero().squeeze(1)
        if pool.numel() == 0:
            raise SelfSupError(
                f"the memory bank's {self.size} rows are all in the batch, so there are no "
                "negatives; use more images or a smaller --batch-size"
            )
        pick = torch.randperm(pool.numel(), device=pool.device)[: min(n, pool.numel())]
        return pool[pick]

    def loss(
        self,
        queries: torch.Tensor,
        indices: torch.Tensor,
        negatives: torch.Tensor,
        temperature: float = 0.07,
        objective: str = "infonce",
    ) -> torch.Tensor:
        """Contrast L2-normalised `queries` (B, D) with their own rows rows[indices] against
        the rows `negatives` (K indices); gradients flow into the queries only."""
        logits = contrast_logits(
            queries, self.rows[indices].detach(), self.rows[negatives].detach(), temperature
        )
        if objective == "infonce":
            return info_nce(logits)
        if objective == "nce":
            if torch.isnan(self.log_z):
                self._estimate_log_z(logits.detach())
            return binary_nce(logits, self.log_z, self.size)
        raise SelfSupError(
            f"unknown objective {objective!r}; choose one of: {', '.join(OBJECTIVES)}"
        )

    @torch.no_grad()
    def _estimate_log_z(self, logits: torch.Tensor) -> None:
        """Z = N * mean exp(logit) over the first global batch (NPID's estimate), in log space."""
        local_log_mean = torch.logsumexp(logits.flatten(), 0) - math.log(logits.numel())
        log_means = _gather(local_log_mean.view(1).to(self.log_z))
        log_mean = torch.logsumexp(log_means, 0) - math.log(log_means.numel())
        self.log_z.fill_(float(log_mean) + math.log(self.size))
