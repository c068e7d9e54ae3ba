"""Word vectors (word2vec's input embeddings) as a backbone: a text's feature is the mean of
its tokens' vectors, the classic "averaged word2vec" sentence representation."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.backbones.transformer import PAD_ID, mean_over_tokens


class WordVectors(nn.Module):
    def __init__(
        self, vocab_size: int, dim: int = 128, name: str = "word_vectors", **_image_args
    ) -> None:
        super().__init__()
        self.config = {"name": name, "vocab_size": vocab_size, "dim": dim}
        self.feature_dim = dim
        self.vectors = nn.Embedding(vocab_size, dim, padding_idx=PAD_ID)
        # word2vec's initialisation: small uniform input vectors.
        nn.init.uniform_(self.vectors.weight, -0.5 / dim, 0.5 / dim)

    def stages(self) -> list[nn.Module]:
        return [self.vectors]

    def forward(self, tokens: torch.Tensor, **_unused) -> torch.Tensor:
        """Per-token vectors (B, T, dim)."""
        return self.vectors(tokens)

    def features(self, tokens: torch.Tensor, **_unused) -> torch.Tensor:
        """Mean of the non-pad token vectors (B, dim)."""
        return mean_over_tokens(self.vectors(tokens), tokens)
