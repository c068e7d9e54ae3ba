"""Downstream evaluation: features, kNN, linear probe, fine-tuning, baselines and the report."""

from __future__ import annotations

from selfsup.evaluate.baselines import evaluate_backbone, random_init_backbone
from selfsup.evaluate.features import extract_features, iterate_batches, raw_pixels
from selfsup.evaluate.finetune import (
    finetune,
    finetune_accuracy,
    supervised_from_scratch_accuracy,
)
from selfsup.evaluate.knn import knn_accuracy, knn_predict, nearest_neighbor_grid
from selfsup.evaluate.labels import stratified_subset, subset_dataset
from selfsup.evaluate.linear import linear_probe_accuracy
from selfsup.evaluate.report import format_table, write_report

__all__ = [
    "evaluate_backbone",
    "extract_features",
    "finetune",
    "finetune_accuracy",
    "format_table",
    "iterate_batches",
    "knn_accuracy",
    "knn_predict",
    "linear_probe_accuracy",
    "nearest_neighbor_grid",
    "random_init_backbone",
    "raw_pixels",
    "stratified_subset",
    "subset_dataset",
    "supervised_from_scratch_accuracy",
    "write_report",
]
