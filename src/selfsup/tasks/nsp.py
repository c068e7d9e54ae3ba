"""BERT's next sentence prediction, alone (`nsp`) or jointly with masked LM (`mlm+nsp`).

Devlin, Chang, Lee, Toutanova, "BERT: Pre-training of Deep Bidirectional Transformers for
Language Understanding", NAACL 2019. https://arxiv.org/abs/1810.04805

Free labels: the input is `[CLS] A [SEP] B [SEP]` with segment embeddings 0 for A and 1 for
B. Half the time B is the sentence that follows A in its document (label 1), otherwise a
random sentence from another document (label 0); a linear head on the [CLS] state tells which.
The pairs are drawn by the data (selfsup.text.data.SentencePairs); the paper trains NSP
together with MLM and sums the two losses.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.tasks.base import Batch, Task
from selfsup.text.heads import LMHead, masked_lm_loss
from selfsup.text.masking import mask_tokens
from selfsup.text.tokenizer import TextTokenizer


class NextSentence(Task):
    name = "nsp"
    data_format: ClassVar[str] = "pairs"
    causal: ClassVar[bool] = False
    segments: ClassVar[int] = 2

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer: TextTokenizer,
        with_mlm: bool = False,
        mask_rate: float = 0.15,
    ) -> None:
        super().__init__(backbone)
        dim = backbone.feature_dim
        # BERT's pooler: dense + tanh on the [CLS] state, then the 2-way classifier.
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 2))
        self.with_mlm, self.mask_rate = with_mlm, mask_rate
        self.mask_id, self.vocab_size = tokenizer.mask_id, tokenizer.vocab_size
        self.special_ids = tokenizer.special_ids
        self.mlm_head = LMHead(backbone.embed.tokens) if with_mlm else None

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        tokens, segments, labels = batch["tokens"], batch["segments"], batch["nsp_labels"]
        targets = None
        if self.mlm_head is not None:
            tokens, targets = mask_tokens(
                tokens, self.mask_id, self.vocab_size, self.special_ids, self.mask_rate
            )
        hidden = self.backbone(tokens, segments=segments)
        logits = self.head(hidden[:, 0])
        nsp_loss = F.cross_entropy(logits, labels)
        logs = {"nsp_loss": nsp_loss, "nsp_accuracy": (logits.argmax(1) == labels).float().mean()}
        if targets is None:
            return {"loss": nsp_loss, **logs}
        mlm_loss, mlm_accuracy = masked_lm_loss(self.mlm_head, hidden, targets)
        return {
            "loss": nsp_loss + mlm_loss,
            "mlm_loss": mlm_loss,
            "mlm_accuracy": mlm_accuracy,
            **logs,
        }


class MaskedLMNextSentence(NextSentence):
    """`mlm+nsp`: BERT's full pretraining objective, the sum of both losses."""

    name = "mlm+nsp"

    def __init__(self, backbone: nn.Module, tokenizer: TextTokenizer, mask_rate: float = 0.15):
        super().__init__(backbone, tokenizer, with_mlm=True, mask_rate=mask_rate)
