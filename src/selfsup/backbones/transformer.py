"""Text Transformer: a bidirectional encoder (BERT) or a causal decoder (GPT) in one class.

Pre-norm blocks (LayerNorm before attention and MLP, as in GPT-2: stable without warmup
tricks) on torch's scaled_dot_product_attention, which picks a fused kernel where it can.
Embeddings are token + position, plus segment (NSP's sentence A/B) and language (XLM) when
the model is built with them. Token id 0 is [PAD] (see selfsup.text.tokenizer).

forward(tokens, ...) -> hidden states (B, T, dim); features(tokens) -> (B, dim): the [CLS]
state of an encoder or the last real token's state of a decoder, as the papers classify.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PAD_ID = 0
# Google's BERT miniatures (Turc et al. 2019, "Well-Read Students Learn Better") and BERT-base.
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"dim": 128, "depth": 2, "heads": 2},
    "mini": {"dim": 256, "depth": 4, "heads": 4},
    "small": {"dim": 512, "depth": 4, "heads": 8},
    "base": {"dim": 768, "depth": 12, "heads": 12},  # BERT-base / GPT-2 small
}


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=causal and mask is None,
        )
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), mask, causal))
        return x + self.drop(self.mlp(self.norm2(x)))


class Embeddings(nn.Module):
    def __init__(self, vocab_size: int, dim: int, max_len: int, segments: int, langs: int):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim, padding_idx=PAD_ID)
        self.positions = nn.Embedding(max_len, dim)
        self.segments = nn.Embedding(segments, dim) if segments else None
        self.langs = nn.Embedding(langs, dim) if langs else None

    def forward(self, tokens, positions=None, segments=None, langs=None) -> torch.Tensor:
        if positions is None:
            positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.tokens(tokens) + self.positions(positions)
        # A model trained with segments / languages always saw one of them: a caller that
        # gives none (e.g. downstream classification of single sentences) gets id 0.
        if self.segments is not None:
            x = x + (self.segments(segments) if segments is not None else self.segments.weight[0])
        if self.langs is not None:
            x = x + (self.langs(langs) if langs is not None else self.langs.weight[0])
        return x


class TextTransformer(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        size: str | None = None,
        dim: int | None = None,
        depth: int | None = None,
        heads: int | None = None,
        mlp_ratio: int = 4,
        max_len: int = 512,
        causal: bool = False,
        segments: int = 0,
        langs: int = 0,
        dropout: float = 0.1,
        name: str = "transformer",
        **_image_args,  # build_backbone passes in_channels / image_size to every backbone
    ) -> None:
        super().__init__()
        preset = SIZES.get(size or "mini")
        if preset is None:
            raise ValueError(f"unknown transformer size {size!r}; choose one of {list(SIZES)}")
        dim, depth, heads = dim or preset["dim"], depth or preset["depth"], heads or preset["heads"]
        self.config = {
            "name": name,
            "vocab_size": vocab_size,
            "dim": dim,
            "depth": depth,
            "heads": heads,
            "mlp_ratio": mlp_ratio,
            "max_len": max_len,
            "causal": causal,
            "segments": segments,
            "langs": langs,
            "dropout": dropout,
        }
        self.causal, self.max_len, self.feature_dim = causal, max_len, dim
        self.embed = Embeddings(vocab_size, dim, max_len, segments, langs)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.apply(_init)

    def stages(self) -> list[nn.Module]:
        """Embeddings, then each block: fine-tuning with --freeze-stages K freezes the first K."""
        return [self.embed, *self.blocks]

    def forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor | None = None,
        segments: torch.Tensor | None = None,
        langs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states (B, T, dim) of int64 tokens (B, T); [PAD] (id 0) keys are ignored."""
        if tokens.shape[1] > self.max_len:
            raise ValueError(f"sequence of {tokens.shape[1]} tokens exceeds max_len {self.max_len}")
        mask = self.attention_mask(tokens)
        x = self.drop(self.embed(tokens, positions, segments, langs))
        for block in self.blocks:
            x = block(x, mask, self.causal)
        return self.norm(x)

    def attention_mask(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """None when nothing is padded (the fast fused path); else a bool (B, 1, T, T) mask."""
        keep = tokens != PAD_ID
        if self.causal or bool(keep.all()):
            # A decoder with right padding needs only the causal mask: real tokens come first
            # and never look right, so they never see a pad.
            return None
        mask = keep[:, None, None, :].expand(-1, 1, tokens.shape[1], -1)
        # A pad query row that sees nothing would give NaN; let pads attend to themselves.
        eye = torch.eye(tokens.shape[1], dtype=torch.bool, device=tokens.device)
        return mask | eye

    def features(self, tokens: torch.Tensor, pool: str | None = None, **kwargs) -> torch.Tensor:
        """(B, dim) sentence features. `pool`: None, the state the papers classify from (the
        [CLS] state of an encoder, the last real token's of a decoder); "mean", the mean of
        the final states over the real tokens, the frozen readout (Reimers & Gurevych 2019:
        a [CLS] state that was never trained to sum up a sentence is a poor frozen feature)."""
        hidden = self(tokens, **kwargs)
        if pool == "mean":
            keep = (tokens != PAD_ID).unsqueeze(-1).to(hidden.dtype)
            return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1)
        if pool is not None:
            raise ValueError(f"unknown pool {pool!r}; use None or 'mean'")
        if not self.causal:
            return hidden[:, 0]
        last = (tokens != PAD_ID).sum(1).clamp(min=1) - 1
        return hidden[torch.arange(tokens.shape[0], device=tokens.device), last]


def _init(module: nn.Module) -> None:
    # BERT / GPT-2 initialisation: N(0, 0.02) weights, zero biases.
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
