"""Deterministic stratified splits shared by the sources that have no official test split."""

from __future__ import annotations

import numpy as np


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices so each class keeps `test_fraction` of its samples in the test part.

    Returns sorted (train_indices, test_indices). A class with a single sample stays in train,
    so every class the test part contains was also seen in training.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        members = members[rng.permutation(len(members))]
        n_test = int(round(len(members) * test_fraction)) if len(members) > 1 else 0
        n_test = min(n_test, len(members) - 1)
        test.append(members[:n_test])
        train.append(members[n_test:])
    empty = np.zeros(0, dtype=np.int64)
    train_idx = np.sort(np.concatenate(train)) if train else empty
    test_idx = np.sort(np.concatenate(test)) if test else empty
    return train_idx.astype(np.int64), test_idx.astype(np.int64)
