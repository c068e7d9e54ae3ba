"""word2vec: skip-gram with negative sampling.

Mikolov, Sutskever, Chen, Corrado, Dean, "Distributed Representations of Words and Phrases
and their Compositionality", NeurIPS 2013. https://arxiv.org/abs/1310.4546

Free labels: a word's neighbours within a window are positives; `negatives` words drawn
from the unigram distribution raised to 3/4 are negatives. The input vectors (the backbone,
`word_vectors`) are kept; the output vectors are part of the task and dropped. Frequent words
are subsampled (kept with probability sqrt(t / f)) and nearer neighbours count more, by
drawing each pair with probability (window - distance + 1) / window, as the paper's code does.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.tasks.base import Batch, Task
from selfsup.text.tokenizer import TextTokenizer


def skipgram_pairs(
    tokens: torch.Tensor, window: int, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(centre, context) token pairs within `window` of each other in each row; `keep` (B, T)
    says which positions may take part (not special, survived subsampling)."""
    length = tokens.shape[1]
    centres, contexts = [], []
    for offset in range(1, window + 1):
        for c_slice, x_slice in (
            (slice(0, length - offset), slice(offset, length)),
            (slice(offset, length), slice(0, length - offset)),
        ):
            ok = keep[:, c_slice] & keep[:, x_slice]
            ok &= torch.rand(ok.shape, device=ok.device) < (window - offset + 1) / window
            centres.append(tokens[:, c_slice][ok])
            contexts.append(tokens[:, x_slice][ok])
    return torch.cat(centres), torch.cat(contexts)


class SkipGram(Task):
    name = "word2vec"
    data_format: ClassVar[str] = "packed"
    causal: ClassVar[bool] = False
    cls_token: ClassVar[bool] = False

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer: TextTokenizer,
        token_counts: torch.Tensor | None = None,
        window: int = 5,
        negatives: int = 5,
        subsample: float = 1e-3,
        max_pairs: int = 32768,
    ) -> None:
        super().__init__(backbone)
        vocab, dim = backbone.vectors.weight.shape
        self.window, self.negatives, self.max_pairs = window, negatives, max_pairs
        # word2vec starts the output vectors at zero.
        self.output = nn.Embedding(vocab, dim)
        nn.init.zeros_(self.output.weight)
        counts = torch.ones(vocab) if token_counts is None else token_counts.float()
        counts[tokenizer.special_ids] = 0
        freq = counts / counts.sum().clamp(min=1)
        keep = torch.where(freq > 0, (subsample / freq.clamp(min=1e-12)).sqrt(), torch.zeros(()))
        self.register_buffer("keep_prob", keep.clamp(max=1.0))
        self.register_buffer("noise", counts.pow(0.75))

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        tokens = batch["tokens"]
        keep = torch.rand(tokens.shape, device=tokens.device) < self.keep_prob[tokens]
        centre, context = skipgram_pairs(tokens, self.window, keep)
        if centre.numel() > self.max_pairs:  # bound the step's cost on long blocks
            pick = torch.randperm(centre.numel(), device=centre.device)[: self.max_pairs]
            centre, context = centre[pick], context[pick]
        noise = torch.multinomial(self.noise, centre.numel() * self.negatives, replacement=True)
        u = self.backbone.vectors(centre)  # (P, D)
        positive = (u * self.output(context)).sum(-1)
        negative = torch.einsum("pd,pkd->pk", u, self.output(noise.view(-1, self.negatives)))
        loss = -(F.logsigmoid(positive).mean() + F.logsigmoid(-negative).sum(1).mean())
        return {"loss": loss, "pairs": torch.tensor(float(centre.numel()))}
