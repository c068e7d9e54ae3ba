"""Heads shared by the language-modelling tasks: they live in the task, never in the backbone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.text.masking import IGNORE


class LMHead(nn.Module):
    """Hidden states -> vocabulary logits through the backbone's own token embeddings (weight
    tying, as BERT and GPT-2 do: fewer parameters, better rare-word vectors). `transform`
    adds BERT's dense + GELU + LayerNorm before the decoder."""

    def __init__(self, embedding: nn.Embedding, transform: bool = True) -> None:
        super().__init__()
        dim = embedding.weight.shape[1]
        self.embedding = embedding
        self.transform = (
            nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))
            if transform
            else nn.Identity()
        )
        self.bias = nn.Parameter(torch.zeros(embedding.weight.shape[0]))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(hidden), self.embedding.weight, self.bias)


def masked_lm_loss(
    head: LMHead, hidden: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, accuracy) over target positions only: the vocabulary projection, the biggest
    matmul of a small model, runs on ~15% of the positions instead of all of them."""
    chosen = targets != IGNORE
    picked = targets[chosen]
    if picked.numel() == 0:  # a batch with no maskable token: zero loss, keeps the graph
        zero = hidden.sum() * 0.0
        return zero, zero.detach()
    logits = head(hidden[chosen])
    accuracy = (logits.argmax(-1) == picked).float().mean()
    return F.cross_entropy(logits, picked), accuracy
