"""Losses shared by several tasks."""

from selfsup.losses.ntxent import gather_with_grad, nt_xent

__all__ = ["gather_with_grad", "nt_xent"]
