"""Colorization: Lab conversion, ab bins, soft targets, rebalancing, and the task itself."""

from __future__ import annotations

import pytest
import torch

from selfsup.backbones import build_backbone
from selfsup.color import gamut_ab_bins, lab_to_rgb, rgb_to_lab
from selfsup.data import load_images
from selfsup.errors import SelfSupError
from selfsup.tasks.colorization import (
    Colorization,
    rebalance_weights,
    smooth_distribution,
    soft_encode,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cifar(shared_data) -> torch.Tensor:
    dataset = load_images("cifar10:" + str(shared_data / "cifar10"), "test")
    return dataset.images[:16].float() / 255


def make_task(**options) -> Colorization:
    backbone = build_backbone("small_cnn", in_channels=3, image_size=32, width=8)
    return Colorization(backbone, (3, 32, 32), **options)


def as_image(colours: list[list[float]]) -> torch.Tensor:
    """Colours (N, 3) as a (3, N, 1) image."""
    return torch.tensor(colours).T[:, :, None]


def test_lab_round_trip_on_cifar_and_random_colours(cifar):
    assert (lab_to_rgb(rgb_to_lab(cifar)) - cifar).abs().max() < 1e-3
    random = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert (lab_to_rgb(rgb_to_lab(random)) - random).abs().max() < 1e-3
    # Extremes of the cube, where both branches of the gamma and of f are used.
    corners = torch.cartesian_prod(*[torch.tensor([0.0, 0.002, 1.0])] * 3)
    assert (
        lab_to_rgb(rgb_to_lab(as_image(corners.tolist()))) - as_image(corners.tolist())
    ).abs().max() < 1e-3


def test_lab_matches_reference_values():
    lab = rgb_to_lab(as_image([[1, 1, 1], [1, 0, 0], [0, 0, 0], [0, 0, 1]]))[..., 0].T
    expected = torch.tensor(
        [[100.0, 0.0, 0.0], [53.24, 80.09, 67.20], [0.0, 0.0, 0.0], [32.30, 79.19, -107.86]]
    )
    assert torch.allclose(lab, expected, atol=0.02)


def test_gamut_bins_are_a_grid_of_reachable_colours():
    bins = gamut_ab_bins()
    assert 240 <= bins.shape[0] <= 313
    assert torch.equal(bins, torch.round(bins / 10) * 10)
    # Every bin centre is within half a cell of some real colour; pure red's cell is one.
    assert (bins == torch.tensor([80.0, 70.0])).all(1).any()
    assert not (bins == torch.tensor([-110.0, 110.0])).all(1).any()  # far outside sRGB


def test_soft_encoding_sums_to_one_and_favours_the_nearest_bin():
    bins = gamut_ab_bins()
    ab = torch.tensor([[0.0, 0.0], [13.0, -27.0], [51.0, 44.0], [-3.0, 77.0]])
    indices, weights = soft_encode(ab, bins, neighbors=5, sigma=5.0)
    assert indices.shape == weights.shape == (4, 5)
    assert torch.allclose(weights.sum(1), torch.ones(4))
    nearest = torch.cdist(ab, bins).argmin(1)
    assert torch.equal(indices[:, 0], nearest)
    assert torch.equal(weights.argmax(1), torch.zeros(4, dtype=torch.long))
    assert torch.equal(bins[indices[0, 0]], torch.tensor([0.0, 0.0]))


def test_rebalance_weights_have_mean_one_and_favour_rare_colours():
    bins = gamut_ab_bins()
    counts = torch.rand(bins.shape[0], generator=torch.Generator().manual_seed(0)) ** 4
    distribution = smooth_distribution(counts / counts.sum(), bins)
    assert torch.allclose(distribution.sum(), torch.tensor(1.0))
    weights = rebalance_weights(distribution, mix=0.5)
    assert torch.allclose((distribution * weights).sum(), torch.tensor(1.0))
    assert weights[distribution.argmin()] > weights[distribution.argmax()]
    assert torch.allclose(rebalance_weights(torch.full((10,), 0.1)), torch.ones(10))


def test_grayscale_data_is_refused():
    backbone = build_backbone("small_cnn", in_channels=1, image_size=28, width=8)
    with pytest.raises(SelfSupError, match=r"colour images \(3 channels\).*has 1.*cifar10:DIR"):
        Colorization(backbone, (1, 28, 28))


def test_gray_images_stored_as_rgb_are_refused_at_the_first_step(cifar):
    """A folder of gray scans is read as RGB: 3 channels, but no colour to predict."""
    task = make_task()
    gray = cifar.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    with pytest.raises(SelfSupError, match="every pixel of the first batch is gray"):
        task({"images": gray, "labels": torch.zeros(16), "indices": torch.arange(16)})
    task({"images": cifar, "labels": torch.zeros(16), "indices": torch.arange(16)})
    task({"images": gray, "labels": torch.zeros(16), "indices": torch.arange(16)})  # checked once


@pytest.mark.parametrize("loss", ["classification", "regression"])
def test_training_step_on_cifar_is_finite(cifar, loss):
    torch.manual_seed(0)
    task = make_task(loss=loss)
    logs = task({"images": cifar, "labels": torch.zeros(16), "indices": torch.arange(16)})
    assert torch.isfinite(logs["loss"]) and logs["loss"] > 0
    logs["loss"].backward()
    assert task.backbone.layers[0][0].weight.grad.abs().sum() > 0
    # What transfers: the backbone on whole colour images of the dataset.
    assert task.backbone(cifar).shape == (16, task.backbone.feature_dim)


@pytest.mark.parametrize("loss", ["classification", "regression"])
def test_a_few_steps_reduce_the_loss_on_a_tiny_batch(cifar, loss):
    torch.manual_seed(0)
    task = make_task(loss=loss, augment=False)
    optimizer = torch.optim.Adam(task.parameters(), lr=1e-2)
    batch = {"images": cifar[:8]}
    losses = []
    for _ in range(10):
        loss_value = task(batch)["loss"]
        optimizer.zero_grad()
        loss_value.backward()
        optimizer.step()
        losses.append(loss_value.item())
    assert losses[-1] < 0.9 * losses[0], losses


def test_prior_is_learnt_and_saved_with_the_task(cifar):
    task = make_task()
    task({"images": cifar})
    assert int(task.prior_batches) == 1
    assert torch.allclose(task.prior.sum(), torch.tensor(1.0))
    distribution = smooth_distribution(task.prior, task.bins)
    assert torch.allclose((distribution * task.class_weights()).sum(), torch.tensor(1.0))
    restored = make_task()
    restored.load_state_dict(task.state_dict())
    assert torch.equal(restored.prior, task.prior)
    assert torch.allclose(restored.class_weights(), task.class_weights())


@pytest.mark.parametrize("loss", ["classification", "regression"])
def test_show_gives_gray_colorized_and_original_rows(cifar, loss):
    task = make_task(loss=loss).eval()
    ab = task.predict_ab(cifar[:8])
    assert ab.shape == (8, 2, 32, 32) and ab.abs().max() <= 128
    (grid,) = task.show(cifar).values()
    assert grid.shape == (24, 3, 32, 32)
    assert grid.min() >= 0 and grid.max() <= 1
    gray, colorized, original = grid.split(8)
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    assert torch.equal(original, cifar[:8])
    # The colorization keeps the input's lightness exactly; only its colour is predicted.
    lightness = rgb_to_lab(cifar[:8])[:, 0]
    assert (rgb_to_lab(colorized)[:, 0] - lightness).abs().mean() < 2.0
