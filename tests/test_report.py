"""The report: metrics.json, report.md, PNGs, the terminal table and the neighbour grid."""

from __future__ import annotations

import json

import torch

from selfsup.data.base import TensorImageDataset
from selfsup.evaluate import format_table, nearest_neighbor_grid, write_report
from selfsup.evaluate.plots import read_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_results() -> dict:
    rows = []
    accuracies = {
        ("ssl", "knn"): (0.70, 0.80, 0.85),
        ("ssl", "linear"): (0.75, 0.84, 0.88),
        ("raw", "knn"): (0.60, 0.70, 0.80),
        ("supervised", "train"): (0.50, 0.80, 0.91),
    }
    for (method, protocol), values in accuracies.items():
        for fraction, n, accuracy in zip((0.01, 0.1, 1.0), (6, 60, 600), values, strict=True):
            row = {"method": method, "protocol": protocol, "fraction": fraction}
            rows.append(row | {"n_labels": n, "accuracy": accuracy, "seconds": 0.1})
    return {"fractions": [0.01, 0.1, 1.0], "rows": rows, "test_size": 100, "feature_dim": 8}


def tiny_dataset(n: int, channels: int, seed: int) -> TensorImageDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, 6, 6), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % 3
    return TensorImageDataset(images, labels, classes=["a", "b", "c"])


def test_nearest_neighbor_grid_finds_same_label_neighbours():
    train, test = tiny_dataset(30, 3, 0), tiny_dataset(12, 3, 1)
    # Features that only encode the label: every neighbour must share the query's label.
    train_feats = torch.nn.functional.one_hot(train.labels, 3).float() + 0.01 * torch.rand(30, 3)
    test_feats = torch.nn.functional.one_hot(test.labels, 3).float()
    grid = nearest_neighbor_grid(train_feats, train, test_feats, test, n_queries=4, k=3)
    assert grid["queries"].shape == (4, 3, 6, 6)
    assert grid["neighbors"].shape == (4, 3, 3, 6, 6)
    assert torch.equal(grid["neighbor_labels"], grid["query_labels"][:, None].expand(4, 3))
    # The pictures are the neighbours' own images.
    assert torch.equal(grid["neighbors"], train.images[grid["neighbor_indices"]])
    assert torch.equal(grid["queries"], test.images[grid["query_indices"]])


def test_write_report_writes_every_file(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": 2.0 / (s + 1), "lr": 0.1}) for s in range(120)]
    metrics.write_text("\n".join(lines) + '\n{"step": 120, "lo')  # torn last line
    assert len(read_metrics(metrics)) == 120
    train, test = tiny_dataset(30, 1, 0), tiny_dataset(10, 1, 1)
    grid = nearest_neighbor_grid(torch.randn(30, 4), train, torch.randn(10, 4), test, k=4)
    pictures = {"Rotated views": torch.rand(10, 3, 6, 6), "Reconstructions (x4)": test.images}
    results = fake_results()
    run = tmp_path / "run"
    report = write_report(
        run,
        results,
        title="SimCLR on digits",
        metrics_path=metrics,
        neighbors=grid,
        pictures=pictures,
        command="selfsup evaluate runs/a --labels 1%,10%,100%",
    )
    assert report == run / "report.md"
    assert json.loads((run / "metrics.json").read_text()) == results
    pngs = ["loss_curve.png", "label_efficiency.png", "neighbors.png"]
    pngs += ["rotated_views.png", "reconstructions_x4.png"]
    for name in pngs:
        assert (run / name).read_bytes()[:8] == PNG_MAGIC, name
    text = report.read_text()
    assert text.startswith("# SimCLR on digits")
    assert "selfsup evaluate runs/a" in text
    assert "| method | 1% (6) | 10% (60) | 100% (600) |" in text
    assert "| SSL linear probe | **0.750** | **0.840** | 0.880 |" in text
    assert "| supervised from scratch | 0.500 | 0.800 | **0.910** |" in text
    for name in pngs:
        assert f"({name})" in text
    assert not [p for p in run.iterdir() if ".tmp" in p.name]


def test_report_without_training_metrics_skips_the_loss_curve(tmp_path):
    write_report(tmp_path, fake_results(), title="t", metrics_path=tmp_path / "missing.jsonl")
    assert not (tmp_path / "loss_curve.png").exists()
    assert (tmp_path / "label_efficiency.png").exists()


def test_format_table_stars_the_best_of_each_column():
    table = format_table(fake_results())
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["method", "1%"]
    assert "10% (60)" in lines[0]
    linear = next(line for line in lines if line.startswith("SSL linear probe"))
    assert linear.split()[-3:] == ["0.750*", "0.840*", "0.880"]
    assert len(lines) == 2 + 4


def test_loss_curve_draws_the_parts_of_a_summed_loss():
    from selfsup.evaluate import plots

    rows = [{"step": s, "loss": 2.0, "d_loss": 1.2, "g_loss": 0.8} for s in range(1, 201)]
    labels = [line.get_label() for line in plots.loss_curve(rows).axes[0].lines]
    assert labels == ["loss", "mean of 4", "d_loss", "g_loss"]
