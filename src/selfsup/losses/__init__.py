"""Losses shared by several tasks."""

from selfsup.losses.memory_bank import MemoryBank
from selfsup.losses.ntxent import gather_with_grad, nt_xent, paired_info_nce
from selfsup.losses.redundancy import barlow_twins_loss, vicreg_loss
from selfsup.losses.siamese import embedding_std, negative_cosine, queue_info_nce

__all__ = [
    "MemoryBank",
    "barlow_twins_loss",
    "embedding_std",
    "gather_with_grad",
    "negative_cosine",
    "nt_xent",
    "paired_info_nce",
    "queue_info_nce",
    "vicreg_loss",
]
