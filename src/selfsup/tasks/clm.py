"""GPT's autoregressive (causal) language model.

Radford, Narasimhan, Salimans, Sutskever, "Improving Language Understanding by Generative
Pre-Training", OpenAI 2018. Byte-level BPE as in GPT-2 (Radford et al. 2019).

Free labels: every token is the target of the tokens before it. The decoder's causal mask
makes each position see only its past, so one forward pass trains all T predictions.
`generate` samples new text from a trained model (`selfsup generate RUN`).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.tasks.base import Batch, Task
from selfsup.text.heads import LMHead
from selfsup.text.tokenizer import TextTokenizer


class CausalLM(Task):
    name = "clm"
    data_format: ClassVar[str] = "packed"
    causal: ClassVar[bool] = True

    def __init__(self, backbone: nn.Module, tokenizer: TextTokenizer) -> None:
        super().__init__(backbone)
        if not getattr(backbone, "causal", False):
            raise ValueError("clm needs a causal transformer (backbone option causal=true)")
        # GPT-2 ties the output projection to the token embeddings, with no extra transform.
        self.head = LMHead(backbone.embed.tokens, transform=False)

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(tokens))

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        tokens = batch["tokens"]
        logits = self.logits(tokens[:, :-1])
        targets = tokens[:, 1:]
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        accuracy = (logits.argmax(-1) == targets).float().mean()
        return {"loss": loss, "accuracy": accuracy}

    @torch.no_grad()
    def generate(
        self,
        prompt: torch.Tensor,
        new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = 50,
    ) -> torch.Tensor:
        """Extend int64 prompts (B, T) by `new_tokens` sampled tokens (B, T + new_tokens);
        `temperature` 0 takes the likeliest token each time."""
        tokens = prompt
        for _ in range(new_tokens):
            context = tokens[:, -self.backbone.max_len :]  # slide past the position table
            logits = self.logits(context)[:, -1]
            if temperature == 0:  # greedy: the likeliest token, no draw
                tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], 1)
                continue
            logits = logits / temperature
            if top_k is not None and top_k < logits.shape[-1]:
                kth = logits.topk(top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(F.softmax(logits, dim=-1), 1)
            tokens = torch.cat([tokens, nxt], 1)
        return tokens
