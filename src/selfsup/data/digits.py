"""scikit-learn's bundled 8x8 digits: the default data set that needs no files or network."""

from __future__ import annotations

import numpy as np
import torch

from selfsup.data.base import TensorImageDataset
from selfsup.data.split import stratified_split

TEST_FRACTION = 0.25
SEED = 0


def load_digits_dataset(split: str) -> TensorImageDataset:
    """The train (75%) or test (25%) part of load_digits, as uint8 images (N, 1, 8, 8)."""
    from sklearn.datasets import load_digits  # imported late: sklearn is slow to import

    bunch = load_digits()
    # Pixels are 0..16 ink levels; scale to the 0..255 range every other source uses.
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = stratified_split(labels, TEST_FRACTION, seed=SEED)
    idx = train_idx if split == "train" else test_idx
    return TensorImageDataset(
        torch.from_numpy(images[idx][:, None].copy()),
        torch.from_numpy(labels[idx]),
        [str(i) for i in range(10)],
        name="digits",
    )
