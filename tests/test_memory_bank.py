"""The memory bank: its update rule, index bookkeeping, negatives, losses, and DDP agreement."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from conftest import run_gloo_ranks
from torch import nn

from selfsup.errors import SelfSupError
from selfsup.losses import MemoryBank
from selfsup.losses.memory_bank import binary_nce, contrast_logits


def unit(*shape: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape), dim=-1)


def test_update_is_the_running_average_formula_and_touches_only_the_batch_rows():
    torch.manual_seed(0)
    bank = MemoryBank(10, 4, momentum=0.3)
    before = bank.rows.clone()
    assert torch.allclose(before.norm(dim=1), torch.ones(10))
    indices, f = torch.tensor([7, 2, 5]), unit(3, 4)
    bank.update(indices, f)
    for i, row in zip(indices.tolist(), f, strict=True):
        mixed = 0.3 * before[i] + 0.7 * row
        assert torch.allclose(bank.rows[i], mixed / mixed.norm(), atol=1e-6)
    untouched = [i for i in range(10) if i not in indices.tolist()]
    assert torch.equal(bank.rows[untouched], before[untouched])


def test_a_permuted_batch_gives_the_same_bank():
    torch.manual_seed(0)
    a, b = MemoryBank(20, 8), MemoryBank(20, 8)
    b.load_state_dict(a.state_dict())
    indices, f = torch.randperm(20)[:6], unit(6, 8)
    perm = torch.randperm(6)
    a.update(indices, f)
    b.update(indices[perm], f[perm])
    assert torch.equal(a.rows, b.rows)


def test_duplicate_indices_are_refused():
    bank = MemoryBank(5, 4)
    with pytest.raises(ValueError, match="same index twice"):
        bank.update(torch.tensor([1, 1]), unit(2, 4))


def test_negatives_are_distinct_outside_the_excluded_rows_and_seeded():
    bank = MemoryBank(50, 4)
    exclude = torch.arange(0, 50, 2)
    torch.manual_seed(1)
    first = bank.negatives(10, exclude=exclude)
    assert first.unique().numel() == 10 and not torch.isin(first, exclude).any()
    torch.manual_seed(1)
    assert torch.equal(bank.negatives(10, exclude=exclude), first)  # the global RNG only
    capped = bank.negatives(1000, exclude=exclude)
    assert sorted(capped.tolist()) == list(range(1, 50, 2))  # every remaining row, once
    with pytest.raises(SelfSupError, match="no negatives"):
        bank.negatives(3, exclude=torch.arange(50))


def test_infonce_loss_is_cross_entropy_with_the_own_row_as_class():
    torch.manual_seed(0)
    bank = MemoryBank(30, 8)
    q, indices, negatives = unit(4, 8), torch.tensor([3, 9, 0, 21]), torch.tensor([1, 5, 7, 11])
    got = bank.loss(q, indices, negatives, temperature=0.1)
    expected = []
    for i in range(4):
        pos = q[i] @ bank.rows[indices[i]] / 0.1
        neg = q[i] @ bank.rows[negatives].T / 0.1
        expected.append(torch.logsumexp(torch.cat([pos.view(1), neg]), 0) - pos)
    assert torch.allclose(got, torch.stack(expected).mean(), atol=1e-5)


def test_nce_loss_matches_the_papers_probabilities_and_freezes_z():
    torch.manual_seed(0)
    n, k, t = 40, 6, 0.07
    bank = MemoryBank(n, 8)
    q, indices = unit(5, 8), torch.tensor([0, 1, 2, 3, 4])
    negatives = torch.arange(10, 10 + k)
    got = bank.loss(q, indices, negatives, t, objective="nce")
    scores = torch.exp(contrast_logits(q, bank.rows[indices], bank.rows[negatives], t).double())
    z = scores.mean() * n  # NPID's estimate from the first batch
    assert math.isclose(float(bank.log_z), math.log(z), rel_tol=1e-5)
    p = scores / z
    h = p / (p + k / n)
    expected = -(torch.log(h[:, 0]) + torch.log(1 - h[:, 1:]).sum(1)).mean()
    assert torch.allclose(got.double(), expected, rtol=1e-4)
    frozen = bank.log_z.clone()
    bank.loss(unit(5, 8), indices, negatives, t, objective="nce")
    assert torch.equal(bank.log_z, frozen)
    assert "log_z" in bank.state_dict() and "rows" in bank.state_dict()


def test_nce_prefers_a_query_that_matches_its_row():
    torch.manual_seed(0)
    bank = MemoryBank(100, 16)
    indices, negatives = torch.arange(8), torch.arange(50, 90)
    logits_good = contrast_logits(
        bank.rows[indices], bank.rows[indices], bank.rows[negatives], 0.07
    )
    logits_bad = contrast_logits(unit(8, 16), bank.rows[indices], bank.rows[negatives], 0.07)
    log_z = torch.logsumexp(logits_bad.flatten(), 0) - math.log(logits_bad.numel()) + math.log(100)
    assert binary_nce(logits_good, log_z, 100) < binary_nce(logits_bad, log_z, 100)


# DDP: two gloo processes against one process on the concatenated batch.

SIZE, DIM, BATCH = 24, 6, 8  # BATCH is the global batch; each rank gets half


def _problem():
    torch.manual_seed(0)
    bank = MemoryBank(SIZE, DIM)
    model = nn.Linear(5, DIM)
    x = torch.randn(BATCH, 5)
    indices = torch.randperm(SIZE)[:BATCH]
    negatives = torch.tensor([i for i in range(SIZE) if i not in indices.tolist()][:10])
    return bank, model, x, indices, negatives


def _step(bank, model, x, indices, negatives, objective):
    """One loss + backward + bank update, as the tasks do it."""
    z = F.normalize(model(x), dim=1)
    loss = bank.loss(z, indices, negatives, 0.1, objective)
    loss.backward()
    bank.update(indices, z)
    return loss.detach()


def _single_process(objective: str) -> dict:
    bank, model, x, indices, negatives = _problem()
    loss = _step(bank, model, x, indices, negatives, objective)
    return {
        "loss": loss,
        "grads": [p.grad.clone() for p in model.parameters()],
        "rows": bank.rows.clone(),
        "log_z": bank.log_z.clone(),
    }


def _rank_worker(rank: int, world: int) -> dict:
    results = {}
    for objective in ("infonce", "nce"):
        bank, model, x, indices, negatives = _problem()
        ddp = nn.parallel.DistributedDataParallel(model)
        part = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
        loss = _step(bank, ddp, x[part], indices[part], negatives, objective)
        dist.all_reduce(loss)
        results[objective] = {
            "loss": loss / world,
            "grads": [p.grad for p in model.parameters()],
            "rows": bank.rows,
            "log_z": bank.log_z,
        }
    return results


def test_two_gloo_processes_keep_the_bank_equal_to_one_process(tmp_path):
    ranks = run_gloo_ranks(_rank_worker, tmp_path)
    bank, *_ = _problem()
    indices = _problem()[3]
    for objective in ("infonce", "nce"):
        expected = _single_process(objective)
        changed = (expected["rows"] != bank.rows).any(dim=1).nonzero().squeeze(1)
        # Every row of the global batch moved, no other one did: nothing lost, nothing doubled.
        assert sorted(changed.tolist()) == sorted(indices.tolist())
        for results in ranks:
            got = results[objective]
            assert torch.allclose(got["rows"], expected["rows"], atol=1e-6), objective
            assert torch.allclose(got["loss"], expected["loss"], atol=1e-5), objective
            for g, e in zip(got["grads"], expected["grads"], strict=True):
                assert torch.allclose(g, e, atol=1e-5), (objective, (g - e).abs().max())
            if objective == "nce":
                assert torch.allclose(got["log_z"], expected["log_z"], atol=1e-5)
