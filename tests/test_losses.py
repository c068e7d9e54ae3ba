"""NT-Xent and CPC's paired InfoNCE: their definitions, and equality of two gloo processes
with one process."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from conftest import run_gloo_ranks
from torch import nn

from selfsup.losses import nt_xent, paired_info_nce


def reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """The SimCLR paper's loss written as a loop over anchors, for comparison."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    losses = []
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        sims = torch.stack([z[i] @ z[k] / temperature for k in range(2 * n) if k != i])
        positive = z[i] @ z[j] / temperature
        losses.append(-positive + torch.logsumexp(sims, 0))
    return torch.stack(losses).mean()


def test_nt_xent_matches_the_paper_definition():
    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 5), torch.randn(6, 5)
    for t in (0.1, 0.5):
        assert torch.allclose(nt_xent(z1, z2, t), reference_nt_xent(z1, z2, t), atol=1e-5)


def test_nt_xent_is_low_for_matching_views_and_high_for_random_ones():
    torch.manual_seed(0)
    z = torch.randn(32, 16)
    matched = nt_xent(z, z + 0.01 * torch.randn_like(z), 0.1)
    random = nt_xent(z, torch.randn(32, 16), 0.1)
    assert matched < 0.5 < random


def _make_problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x1, x2 = torch.randn(8, 8), torch.randn(8, 8)
    return model, x1, x2


# The cross-sample losses under test, by name (a name pickles into spawned processes).
LOSSES = {
    "nt_xent": lambda a, b: nt_xent(a, b, 0.5),
    "paired_info_nce": lambda a, b: paired_info_nce(a, b, 0.1)[0],
    # Two groups of 2-d embeddings: keys are gathered per group.
    "paired_info_nce_grouped": lambda a, b: paired_info_nce(
        a.view(len(a), 2, 2), b.view(len(b), 2, 2), 0.1
    )[0],
}


def _single_process(loss_name: str):
    model, x1, x2 = _make_problem()
    z1, z2 = model(torch.cat([x1, x2])).chunk(2)
    loss = LOSSES[loss_name](z1, z2)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def _rank_worker(loss_name: str, rank: int, world: int) -> dict:
    model, x1, x2 = _make_problem()
    ddp = nn.parallel.DistributedDataParallel(model)
    part = slice(rank * 4, (rank + 1) * 4)
    z1, z2 = ddp(torch.cat([x1[part], x2[part]])).chunk(2)
    loss = LOSSES[loss_name](z1, z2)
    loss.backward()  # DDP averages the gradients across ranks
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    return {"loss": mean_loss / world, "grads": [p.grad for p in model.parameters()]}


@pytest.mark.parametrize("loss_name", list(LOSSES))
def test_two_gloo_processes_equal_one_process_on_the_whole_batch(tmp_path, loss_name):
    expected_loss, expected_grads = _single_process(loss_name)
    for got in run_gloo_ranks(functools.partial(_rank_worker, loss_name), tmp_path):
        assert torch.allclose(got["loss"], expected_loss, atol=1e-6)
        for g, e in zip(got["grads"], expected_grads, strict=True):
            assert torch.allclose(g, e, atol=1e-6), (g - e).abs().max()


def test_paired_info_nce_matches_its_definition():
    torch.manual_seed(0)
    q, k = torch.randn(7, 5), torch.randn(7, 5)
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    expected = torch.stack(
        [-(qn[i] @ kn[i]) / 0.2 + torch.logsumexp(qn[i] @ kn.T / 0.2, 0) for i in range(7)]
    ).mean()
    loss, accuracy = paired_info_nce(q, k, 0.2)
    assert torch.allclose(loss, expected, atol=1e-5)
    assert accuracy == ((qn @ kn.T).argmax(1) == torch.arange(7)).float().mean()
    # Aligned rows are found; shuffled ones are not.
    _, found = paired_info_nce(k + 0.01 * torch.randn_like(k), k, 0.1)
    _, lost = paired_info_nce(k[torch.randperm(7)], k, 0.1)
    assert found == 1.0 and lost < 1.0


def test_grouped_paired_info_nce_is_one_contest_per_group():
    torch.manual_seed(0)
    q, k = torch.randn(6, 3, 5), torch.randn(6, 3, 5)
    per_group = [paired_info_nce(q[:, g], k[:, g], 0.2) for g in range(3)]
    loss, accuracy = paired_info_nce(q, k, 0.2)
    assert torch.allclose(loss, torch.stack([loss for loss, _ in per_group]).mean(), atol=1e-5)
    assert torch.allclose(accuracy, torch.stack([acc for _, acc in per_group]).mean())
