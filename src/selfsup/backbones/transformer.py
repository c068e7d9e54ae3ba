"""Text Transformer: a bidirectional encoder (BERT) or a causal decoder (GPT) in one class.

Pre-norm blocks (LayerNorm before attention and MLP, as in GPT-2: stable without warmup
tricks) on torch's scaled_dot_product_attention, which picks a fused kernel where it can.
Embeddings are token + position, plus segment (NSP's sentence A/B) and language (XLM) when
the model is built with them. Token id 0 is [PAD] (see selfsup.text.tokenizer).

Positions are learned absolute embeddings (BERT, GPT) by default, or rotary (`positions:
rotary`, Su et al. 2021, RoFormer, https://arxiv.org/abs/2104.09864): queries and keys are
rotated by an angle proportional to their position, so attention scores depend on the offset
between two tokens from the first step on instead of after the position table has been learned.

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


Rotary = tuple[torch.Tensor, torch.Tensor]  # (cos, sin), each (B or 1, 1, T, head_dim)


def rotary_angles(positions: torch.Tensor, head_dim: int, base: float = 10000.0) -> Rotary:
    """cos and sin of RoFormer's angles for int positions (T,) or (B, T): pair i of a head's
    channels turns by position * base^(-2i / head_dim)."""
    if positions.dim() == 1:
        positions = positions[None]
    steps = torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32)
    angles = positions[..., None].float() * base ** (-steps / head_dim)  # (B, T, head_dim/2)
    angles = torch.cat([angles, angles], dim=-1)[:, None]  # (B, 1, T, head_dim)
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each channel pair (i, i + head_dim/2) of x (B, heads, T, head_dim)."""
    first, second = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat([-second, first], dim=-1) * sin.to(x.dtype)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, causal: bool, rotary: Rotary | None
    ) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if rotary is not None:
            q, k = rotate(q, *rotary), rotate(k, *rotary)
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

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, causal: bool, rotary: Rotary | None
    ) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), mask, causal, rotary))
        return x + self.drop(self.mlp(self.norm2(x)))


class Embeddings(nn.Module):
    def __init__(
        self, vocab_size: int, dim: int, max_len: int, segments: int, langs: int, learned: bool
    ):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim, padding_idx=PAD_ID)
        # Rotary models (learned=False) put positions into attention instead.
        self.positions = nn.Embedding(max_len, dim) if learned else None
        self.segments = nn.Embedding(segments, dim) if segments else None
        self.langs = nn.Embedding(langs, dim) if langs else None

    def forward(self, tokens, positions, segments=None, langs=None) -> torch.Tensor:
        x = self.tokens(tokens)
        if self.positions is not None:
            x = x + self.positions(positions)
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
        positions: str = "learned",
        name: str = "transformer",
        **_image_args,  # build_backbone passes in_channels / image_size to every backbone
    ) -> None:
        super().__init__()
        preset = SIZES.get(size or "mini")
        if preset is None:
            raise ValueError(f"unknown transformer size {size!r}; choose one of {list(SIZES)}")
        dim, depth, heads = dim or preset["dim"], depth or preset["depth"], heads or preset["heads"]
        if positions not in ("learned", "rotary"):
            raise ValueError(f"unknown positions {positions!r}; use 'learned' or 'rotary'")
        if positions == "rotary" and (dim // heads) % 2:
            raise ValueError(f"rotary positions need an even head size, got {dim}/{heads}")
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
            "positions": positions,
        }
        self.causal, self.max_len, self.feature_dim = causal, max_len, dim
        self.rotary = positions == "rotary"
        self.head_dim = dim // heads
        self.embed = Embeddings(vocab_size, dim, max_len, segments, langs, not self.rotary)
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
        if positions is None:
            positions = torch.arange(tokens.shape[1], device=tokens.device)
        rotary = rotary_angles(positions, self.head_dim) if self.rotary else None
        x = self.drop(self.embed(tokens, positions, segments, langs))
        for block in self.blocks:
            x = block(x, mask, self.causal, rotary)
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
            return mean_over_tokens(hidden, tokens)
        if pool is not None:
            raise ValueError(f"unknown pool {pool!r}; use None or 'mean'")
        if not self.causal:
            return hidden[:, 0]
        last = (tokens != PAD_ID).sum(1).clamp(min=1) - 1
        return hidden[torch.arange(tokens.shape[0], device=tokens.device), last]


def mean_over_tokens(states: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(B, dim) mean of per-token states (B, T, dim) over the real (non-[PAD]) tokens."""
    keep = (tokens != PAD_ID).unsqueeze(-1).to(states.dtype)
    return (states * keep).sum(1) / keep.sum(1).clamp(min=1)


def _init(module: nn.Module) -> None:
    # BERT / GPT-2 initialisation: N(0, 0.02) weights, zero biases.
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
