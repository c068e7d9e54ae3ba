"""XLM's translation language model, trained alongside monolingual masked LM.

Lample & Conneau, "Cross-lingual Language Model Pretraining", NeurIPS 2019.
https://arxiv.org/abs/1901.07291

Free labels: a sentence and its translation are concatenated into one stream; each part gets
its language's embedding and its own positions starting again at 0, and tokens are masked on
both sides (BERT's 15%, 80/10/10). To fill a masked English word the model may look at the
German sentence, which aligns the two languages' representations. As in the paper, TLM
batches alternate with MLM on single sentences of either language (`tlm_fraction` of each
batch is TLM; 0 gives the monolingual-MLM-only control the paper compares with).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from selfsup.backbones.transformer import PAD_ID
from selfsup.tasks.base import Batch, Task
from selfsup.text.heads import LMHead, masked_lm_loss
from selfsup.text.masking import mask_tokens
from selfsup.text.tokenizer import TextTokenizer


def frame(seqs: torch.Tensor, cls_id: int, sep_id: int) -> torch.Tensor:
    """`[CLS] seq [SEP]` for right-padded rows (B, T) -> (B, T + 2), still right-padded."""
    b, t = seqs.shape
    lengths = (seqs != PAD_ID).sum(1)
    out = torch.full((b, t + 2), PAD_ID, dtype=seqs.dtype, device=seqs.device)
    out[:, 0] = cls_id
    out[:, 1 : t + 1] = seqs
    out[torch.arange(b, device=seqs.device), lengths + 1] = sep_id
    return out


def tlm_view(
    src: torch.Tensor, tgt: torch.Tensor, src_lang: int, tgt_lang: int, cls_id: int, sep_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens, positions, langs) of the concatenated pair; positions restart at the second
    sentence. Padding inside the stream is harmless: the encoder never attends to [PAD]."""
    a, b = frame(src, cls_id, sep_id), frame(tgt, cls_id, sep_id)
    tokens = torch.cat([a, b], 1)
    device = src.device
    positions = torch.cat(
        [torch.arange(a.shape[1], device=device), torch.arange(b.shape[1], device=device)]
    )
    langs = torch.cat([torch.full_like(a, src_lang), torch.full_like(b, tgt_lang)], 1)
    return tokens, positions.expand_as(tokens), langs


class TranslationLM(Task):
    name = "tlm"
    data_format: ClassVar[str] = "parallel"
    causal: ClassVar[bool] = False

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer: TextTokenizer,
        tlm_fraction: float = 0.5,
        mask_rate: float = 0.15,
    ) -> None:
        super().__init__(backbone)
        self.tlm_fraction, self.mask_rate = tlm_fraction, mask_rate
        self.cls_id, self.sep_id = tokenizer.cls_id, tokenizer.sep_id
        self.mask_id, self.vocab_size = tokenizer.mask_id, tokenizer.vocab_size
        self.special_ids = tokenizer.special_ids
        self.head = LMHead(backbone.embed.tokens)

    def _masked_loss(self, tokens, positions, langs):
        inputs, targets = mask_tokens(
            tokens, self.mask_id, self.vocab_size, self.special_ids, self.mask_rate
        )
        return masked_lm_loss(
            self.head, self.backbone(inputs, positions=positions, langs=langs), targets
        )

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        src, tgt = batch["src"], batch["tgt"]
        src_lang, tgt_lang = int(batch["langs"][0]), int(batch["langs"][1])
        n_tlm = round(self.tlm_fraction * src.shape[0])
        logs, losses = {}, []
        if n_tlm > 0:
            view = tlm_view(src[:n_tlm], tgt[:n_tlm], src_lang, tgt_lang, self.cls_id, self.sep_id)
            loss, accuracy = self._masked_loss(*view)
            logs.update(tlm_loss=loss, tlm_accuracy=accuracy)
            losses.append(loss)
        if n_tlm < src.shape[0]:
            # Monolingual MLM: each remaining row is one of its two sentences, chosen at random.
            s, t = src[n_tlm:], tgt[n_tlm:]
            width = max(s.shape[1], t.shape[1])
            s = nn.functional.pad(s, (0, width - s.shape[1]), value=PAD_ID)
            t = nn.functional.pad(t, (0, width - t.shape[1]), value=PAD_ID)
            pick_tgt = torch.rand(s.shape[0], 1, device=s.device) < 0.5
            tokens = frame(torch.where(pick_tgt, t, s), self.cls_id, self.sep_id)
            langs = torch.where(pick_tgt, tgt_lang, src_lang).expand_as(tokens)
            loss, accuracy = self._masked_loss(tokens, None, langs)
            logs.update(mlm_loss=loss, mlm_accuracy=accuracy)
            losses.append(loss)
        return {"loss": torch.stack(losses).mean(), **logs}
