"""Redundancy-reduction losses: Barlow Twins (Zbontar et al. 2021) and VICReg (Bardes et al. 2022).

Both need statistics of each embedding dimension over the *global* batch. Every rank gathers the
embeddings of all ranks with a gradient-carrying all_gather and computes the single-process
loss of the concatenated batch, so each rank's loss is the global loss. The all_gather's
backward sums the gradients of the world_size identical copies of that loss (a factor
world_size on each rank's embeddings) and DDP's gradient averaging divides by world_size again:
the parameters get exactly the single-process gradient (tested in tests/test_barlow_vicreg.py
with two gloo processes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.losses.ntxent import gather_with_grad


def _check_pair(z1: torch.Tensor, z2: torch.Tensor) -> None:
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(
            f"z1 and z2 must both be (B, D), got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )


def _off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a square matrix, flattened."""
    n = matrix.shape[0]
    return matrix.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def _global_pair(z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # float32: the statistics are sums over the batch that bf16 would round away.
    return gather_with_grad(z1.float()), gather_with_grad(z2.float())


def barlow_twins_loss(
    z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3, eps: float = 1e-5
) -> torch.Tensor:
    """sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2 for the cross-correlation C (D x D).

    C is computed between the two views' embeddings, each dimension standardised over the
    global batch (mean 0, biased variance 1 + eps, as the paper's affine-free BatchNorm does).
    """
    _check_pair(z1, z2)
    z1, z2 = _global_pair(z1, z2)
    n = z1.shape[0]
    if n < 2:
        raise ValueError("barlow_twins_loss needs at least 2 samples to standardise over")
    z1 = (z1 - z1.mean(0)) / torch.sqrt(z1.var(0, unbiased=False) + eps)
    z2 = (z2 - z2.mean(0)) / torch.sqrt(z2.var(0, unbiased=False) + eps)
    c = z1.T @ z2 / n
    on_diag = (1 - torch.diagonal(c)).pow(2).sum()
    return on_diag + lambd * _off_diagonal(c).pow(2).sum()


def vicreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
) -> dict[str, torch.Tensor]:
    """VICReg's loss and its three terms {"loss", "invariance", "variance", "covariance"}.

    invariance: mean squared error between the views; variance: mean over dimensions of
    relu(gamma - sqrt(var + eps)) (unbiased variance over the global batch), averaged over the
    two views; covariance: sum of squared off-diagonal covariances / D, summed over the views.
    """
    _check_pair(z1, z2)
    z1, z2 = _global_pair(z1, z2)
    n, dim = z1.shape
    if n < 2:
        raise ValueError("vicreg_loss needs at least 2 samples for a variance")
    invariance = F.mse_loss(z1, z2)
    variance = z1.new_zeros(())
    covariance = z1.new_zeros(())
    for z in (z1, z2):
        z = z - z.mean(0)
        std = torch.sqrt(z.var(0) + eps)
        variance = variance + F.relu(gamma - std).mean() / 2
        cov = z.T @ z / (n - 1)
        covariance = covariance + _off_diagonal(cov).pow(2).sum() / dim
    loss = sim_weight * invariance + var_weight * variance + cov_weight * covariance
    return {"loss": loss, "invariance": invariance, "variance": variance, "covariance": covariance}
