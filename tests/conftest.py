"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only benchmark data folder (../shared/data); skips the test when it is absent."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} not found")
    return path


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from intra-op threads and lose a lot when the cores are shared.

    Use with `pytestmark = pytest.mark.usefixtures("one_thread")`.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def real_images(shared_data):
    """`real_images(channels)`: 8 real test images as floats in [0, 1], (8, C, H, W).

    1 channel: Fashion-MNIST 28 px; 3 channels: CIFAR-10 32 px.
    """
    from selfsup.data import load_images

    def load(channels: int):
        spec = "cifar10" if channels == 3 else "fashion-mnist"
        dataset = load_images(f"{spec}:{shared_data / spec}", "test")
        return dataset.images[:8].float() / 255

    return load


def check_patch_task_step(task, images) -> None:
    """One step of a patch task (relative patch, jigsaw) on 8 whole images: a finite loss whose
    gradient reaches the first conv, a backbone that still takes whole images, and pictures."""
    import torch

    channels, size = images.shape[1], images.shape[-1]
    out = task({"images": images, "labels": torch.full((8,), -1), "indices": torch.arange(8)})
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert task.backbone.layers[0][0].weight.grad.abs().sum() > 0
    assert task.backbone(images).shape == (8, task.backbone.feature_dim)
    shown = next(iter(task.eval().show(images).values()))
    assert shown.shape == (32, channels, size, size)
