"""BERT's masking: the free labels of masked language modelling (mlm, mlm+nsp, tlm).

Each call draws a fresh mask (dynamic masking, as RoBERTa showed beats BERT's fixed copies):
`rate` of the maskable tokens become targets; of those 80% are replaced by [MASK], 10% by a
random token and 10% are left unchanged, so the model cannot learn that only [MASK] positions
matter.
"""

from __future__ import annotations

import torch

IGNORE = -100  # cross_entropy's ignore_index: positions that are not targets


def mask_tokens(
    tokens: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    special_ids: list[int],
    rate: float = 0.15,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets): inputs with the 80/10/10 corruption, targets = the original token at
    chosen positions and IGNORE elsewhere. Special tokens ([CLS], [SEP], [PAD], language tags)
    are never chosen."""
    special = torch.zeros(vocab_size, dtype=torch.bool, device=tokens.device)
    special[torch.tensor(special_ids, device=tokens.device)] = True
    maskable = ~special[tokens]
    chosen = (torch.rand(tokens.shape, device=tokens.device) < rate) & maskable
    targets = torch.where(chosen, tokens, torch.full_like(tokens, IGNORE))
    roll = torch.rand(tokens.shape, device=tokens.device)
    to_mask = chosen & (roll < 0.8)
    to_random = chosen & (roll >= 0.8) & (roll < 0.9)
    # Random replacements are ordinary tokens, never [MASK]/[CLS]/...: draw from the rest.
    ordinary = torch.nonzero(~special).flatten()
    random_tokens = ordinary[torch.randint(0, ordinary.numel(), tokens.shape, device=tokens.device)]
    inputs = torch.where(to_mask, torch.full_like(tokens, mask_id), tokens)
    inputs = torch.where(to_random, random_tokens, inputs)
    return inputs, targets
