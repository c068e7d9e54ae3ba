"""BERT's masked language model.

Devlin, Chang, Lee, Toutanova, "BERT: Pre-training of Deep Bidirectional Transformers for
Language Understanding", NAACL 2019. https://arxiv.org/abs/1810.04805
Dynamic masking as in Liu et al., "RoBERTa", 2019. https://arxiv.org/abs/1907.11692

Free labels: 15% of the tokens of a packed block are hidden (80% [MASK], 10% a random token,
10% unchanged) and the encoder predicts the originals from both sides' context.

The output layer shares the token embeddings (weight tying, as BERT). `tie_output: false` gives
it its own copy instead, started from the embeddings: with `freeze_word_vectors` the inputs
then stay word2vec's while the output layer still learns.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from selfsup.tasks.base import Batch, Task
from selfsup.text.heads import LMHead, masked_lm_loss
from selfsup.text.masking import mask_tokens
from selfsup.text.tokenizer import TextTokenizer


class MaskedLM(Task):
    name = "mlm"
    data_format: ClassVar[str] = "packed"  # fixed-length blocks of the token stream
    causal: ClassVar[bool] = False

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer: TextTokenizer,
        mask_rate: float = 0.15,
        tie_output: bool = True,
    ) -> None:
        super().__init__(backbone)
        self.mask_rate = mask_rate
        self.mask_id, self.vocab_size = tokenizer.mask_id, tokenizer.vocab_size
        self.special_ids = tokenizer.special_ids
        tokens = backbone.embed.tokens
        if not tie_output:
            tokens = nn.Embedding.from_pretrained(tokens.weight.detach().clone(), freeze=False)
        self.head = LMHead(tokens)

    def mask(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return mask_tokens(tokens, self.mask_id, self.vocab_size, self.special_ids, self.mask_rate)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        inputs, targets = self.mask(batch["tokens"])
        loss, accuracy = masked_lm_loss(self.head, self.backbone(inputs), targets)
        return {"loss": loss, "accuracy": accuracy}
