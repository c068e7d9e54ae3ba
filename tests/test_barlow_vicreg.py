"""Barlow Twins and VICReg: losses against direct references, DDP equality, training steps."""

from __future__ import annotations

import torch
from conftest import run_gloo_ranks
from torch import nn

from selfsup.backbones import build_backbone
from selfsup.data import load_images
from selfsup.losses import barlow_twins_loss, vicreg_loss
from selfsup.tasks.barlow_twins import BarlowTwins
from selfsup.tasks.vicreg import VICReg


def reference_barlow_twins(z1: torch.Tensor, z2: torch.Tensor, lambd: float) -> torch.Tensor:
    """The paper's formula entry by entry: C_ij = sum_b za_bi zb_bj / N on standardised z."""
    n, d = z1.shape

    def standardise(z: torch.Tensor, i: int) -> torch.Tensor:
        column = z[:, i]
        mean = sum(column) / n
        var = sum((x - mean) ** 2 for x in column) / n
        return (column - mean) / torch.sqrt(var + 1e-5)

    a = [standardise(z1, i) for i in range(d)]
    b = [standardise(z2, j) for j in range(d)]
    loss = torch.zeros(())
    for i in range(d):
        for j in range(d):
            c = sum(a[i][k] * b[j][k] for k in range(n)) / n
            loss = loss + ((1 - c) ** 2 if i == j else lambd * c**2)
    return loss


def reference_vicreg(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """The paper's Algorithm 1 written with torch.std and torch.cov."""
    d = z1.shape[1]
    invariance = ((z1 - z2) ** 2).mean()
    variance = sum(torch.relu(1 - torch.sqrt(z.var(0) + 1e-4)).mean() / 2 for z in (z1, z2))
    covariance = 0
    for z in (z1, z2):
        cov = torch.cov(z.T)
        covariance = covariance + (cov**2).sum() / d - (torch.diagonal(cov) ** 2).sum() / d
    return 25 * invariance + 25 * variance + covariance


def test_losses_match_direct_references():
    torch.manual_seed(0)
    z1, z2 = torch.randn(10, 5), torch.randn(10, 5)
    for lambd in (5e-3, 0.2):
        got = barlow_twins_loss(z1, z2, lambd)
        assert torch.allclose(got, reference_barlow_twins(z1, z2, lambd), atol=1e-5)
    # Small spread so the variance hinge is active for some dimensions.
    z1, z2 = 0.5 * torch.randn(10, 5), 0.5 * torch.randn(10, 5) + 1
    got = vicreg_loss(z1, z2)
    assert torch.allclose(got["loss"], reference_vicreg(z1, z2), atol=1e-5)
    assert got["variance"] > 0 and got["covariance"] > 0 and got["invariance"] > 0


def test_losses_are_low_for_decorrelated_invariant_embeddings():
    torch.manual_seed(0)
    # Identical views with independent, unit-variance dimensions: near the minimum of both.
    z = torch.randn(512, 8)
    z = (z - z.mean(0)) / z.std(0)
    assert barlow_twins_loss(z, z) < 0.05 < barlow_twins_loss(z, torch.randn(512, 8))
    collapsed = vicreg_loss(torch.zeros(512, 8), torch.zeros(512, 8))
    assert vicreg_loss(z, z)["loss"] < 0.5 < collapsed["loss"]
    assert torch.isclose(collapsed["variance"], torch.tensor(1 - 1e-2), atol=1e-4)


LOSSES = {
    "barlow_twins": lambda z1, z2: barlow_twins_loss(z1, z2, 0.1),
    "vicreg": lambda z1, z2: vicreg_loss(z1, z2)["loss"],
}


def _make_problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 6))
    x1, x2 = torch.randn(8, 8), torch.randn(8, 8)
    return model, x1, x2


def _single_process(name: str):
    model, x1, x2 = _make_problem()
    z1, z2 = model(torch.cat([x1, x2])).chunk(2)
    loss = LOSSES[name](z1, z2)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def _rank_worker(rank: int, world: int) -> dict:
    results = {}
    for name, loss_fn in LOSSES.items():
        model, x1, x2 = _make_problem()
        ddp = nn.parallel.DistributedDataParallel(model)
        part = slice(rank * 4, (rank + 1) * 4)
        z1, z2 = ddp(torch.cat([x1[part], x2[part]])).chunk(2)
        loss = loss_fn(z1, z2)
        loss.backward()  # DDP averages the gradients across ranks
        results[name] = {"loss": loss.detach(), "grads": [p.grad for p in model.parameters()]}
    return results


def test_two_gloo_processes_equal_one_process_on_the_whole_batch(tmp_path):
    ranks = run_gloo_ranks(_rank_worker, tmp_path)
    for name in LOSSES:
        expected_loss, expected_grads = _single_process(name)
        for results in ranks:
            got = results[name]
            # Every rank computes the loss of the global batch, so no averaging is needed.
            assert torch.allclose(got["loss"], expected_loss, atol=1e-5), name
            for g, e in zip(got["grads"], expected_grads, strict=True):
                assert torch.allclose(g, e, atol=1e-5), (name, (g - e).abs().max())


def _tiny_task(cls, **options):
    torch.manual_seed(0)
    backbone = build_backbone("small_cnn", in_channels=1, image_size=8, width=8)
    return cls(backbone, (1, 8, 8), projection_dim=32, hidden_dim=32, **options)


def _digits_batch() -> dict[str, torch.Tensor]:
    images = load_images("digits").images[:16].float() / 255
    return {"images": images, "labels": torch.full((16,), -1), "indices": torch.arange(16)}


def test_training_steps_give_finite_losses_that_decrease():
    batch = _digits_batch()
    for cls in (BarlowTwins, VICReg):
        task = _tiny_task(cls)
        optimizer = torch.optim.Adam(task.parameters(), lr=3e-3)

        def loss_now(task=task) -> dict[str, torch.Tensor]:
            torch.manual_seed(1)  # the same augmented views each time
            return task(batch)

        logs = loss_now()
        assert torch.isfinite(logs["loss"])
        if cls is VICReg:
            assert {"invariance", "variance", "covariance"} <= logs.keys()
        before = logs["loss"].item()
        for _ in range(3):
            loss = loss_now()["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        assert loss_now()["loss"].item() < before, cls.name


def test_show_returns_image_and_two_views():
    images = _digits_batch()["images"]
    for cls in (BarlowTwins, VICReg):
        (grid,) = _tiny_task(cls).show(images).values()
        assert grid.shape == (24, 1, 8, 8)
        assert torch.equal(grid[:8], images[:8])  # the first row of the 8-wide grid
