"""The run report: metrics.json, report.md and its PNGs, each written atomically."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from selfsup.evaluate import plots

METHOD_NAMES = {
    ("ssl", "knn"): "SSL kNN",
    ("ssl", "linear"): "SSL linear probe",
    ("ssl", "finetune"): "SSL fine-tune",
    ("raw", "knn"): "raw pixels kNN",
    ("raw", "logreg"): "raw pixels logistic regression",
    ("random_init", "knn"): "random init kNN",
    ("random_init", "linear"): "random init linear probe",
    ("supervised", "train"): "supervised from scratch",
    ("tfidf", "logreg"): "TF-IDF logistic regression",
    ("word2vec", "logreg"): "averaged word2vec logistic regression",
}


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write via a temporary file and os.replace, so a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _percent(fraction: float) -> str:
    return f"{100 * fraction:g}%"


def table_data(results: dict) -> tuple[list[str], list[str], list[list[float | None]]]:
    """(column headers, row names, accuracies[row][column]) in method order; None = not run."""
    fractions = list(results.get("fractions", []))
    n_labels = {}
    cells: dict[tuple[str, str], dict[float, float]] = {}
    for row in results.get("rows", []):
        key = (row["method"], row["protocol"])
        cells.setdefault(key, {})[row["fraction"]] = row["accuracy"]
        n_labels[row["fraction"]] = row["n_labels"]
        if row["fraction"] not in fractions:
            fractions.append(row["fraction"])
    order = list(METHOD_NAMES)
    keys = sorted(cells, key=lambda key: order.index(key) if key in order else len(order))
    headers = [
        f"{_percent(f)} ({n_labels[f]})" if f in n_labels else _percent(f) for f in fractions
    ]
    names = [METHOD_NAMES.get(key, " ".join(key)) for key in keys]
    values = [[cells[key].get(f) for f in fractions] for key in keys]
    return headers, names, values


def _best(values: list[list[float | None]], column: int) -> float | None:
    present = [row[column] for row in values if row[column] is not None]
    return max(present) if present else None


def markdown_table(results: dict) -> str:
    """Method rows x label-fraction columns (labels used in brackets); column best in bold."""
    headers, names, values = table_data(results)
    lines = [
        "| method | " + " | ".join(headers) + " |",
        "|---|" + "---:|" * len(headers),
    ]
    for name, row in zip(names, values, strict=True):
        cells = []
        for c, value in enumerate(row):
            if value is None:
                cells.append("–")
            elif value == _best(values, c):
                cells.append(f"**{value:.3f}**")
            else:
                cells.append(f"{value:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_table(results: dict) -> str:
    """The same table as plain text for a terminal; the best of each column is starred."""
    headers, names, values = table_data(results)
    body = []
    for name, row in zip(names, values, strict=True):
        cells = []
        for c, value in enumerate(row):
            if value is None:
                cells.append("-")
            else:
                cells.append(f"{value:.3f}" + ("*" if value == _best(values, c) else " "))
        body.append([name, *cells])
    grid = [["method", *headers], *body]
    widths = [max(len(r[i]) for r in grid) for i in range(len(grid[0]))]
    lines = []
    for r, cells in enumerate(grid):
        padded = [cells[0].ljust(widths[0])]
        padded += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        lines.append("  ".join(padded))
        if r == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _slug(caption: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", caption.lower()).strip("_")[:60] or "picture"


def _save(fig, path: Path) -> None:
    atomic_write(path, plots.png_bytes(fig))


def _pretraining_lines(run: dict, run_dir: Path) -> list[str]:
    """How far pretraining got: an interrupted run's evaluation is of a partial checkpoint,
    which the numbers alone would not tell."""
    if "steps" not in run or "planned_steps" not in run:
        return []
    done, planned = run["steps"], run["planned_steps"]
    if done >= planned:
        return [f"Backbone after all {planned} pretraining steps.", ""]
    return [
        f"**Note:** pretraining stopped at step {done} of {planned}; these results are for that "
        f"checkpoint (`selfsup pretrain --resume {run_dir}` finishes it).",
        "",
    ]


def write_report(
    run_dir: Path,
    results: dict,
    *,
    title: str,
    metrics_path: Path | None = None,
    neighbors: dict | None = None,
    pictures: dict[str, torch.Tensor] | None = None,
    command: str | None = None,
) -> Path:
    """Write metrics.json, the PNG plots and report.md into run_dir; return report.md's path.

    `metrics_path` is the pretraining metrics.jsonl (loss curve), `neighbors` the output of
    `nearest_neighbor_grid`, `pictures` {caption: image grid (N, C, H, W)} from the task.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "metrics.json", json.dumps(results, indent=2) + "\n")
    lines = [f"# {title}", ""]
    if command:
        lines += ["```", command, "```", ""]
    lines += _pretraining_lines(results.get("run", {}), run_dir)
    lines += [f"**Note:** {note}\n" for note in results.get("notes", [])]
    if results.get("rows"):
        lines += ["## Label efficiency", ""]
        facts = [
            f"{key.replace('_', ' ')}: {results[key]}"
            for key in ("train_size", "test_size", "feature_dim", "k", "seed")
            if key in results
        ]
        if facts:
            lines += ["Test accuracy; " + ", ".join(facts) + ".", ""]
        lines += [markdown_table(results), ""]
        fig = plots.label_efficiency(results, METHOD_NAMES)
        if fig is not None:
            _save(fig, run_dir / "label_efficiency.png")
            lines += ["![label efficiency](label_efficiency.png)", ""]
    if metrics_path is not None:
        fig = plots.loss_curve(plots.read_metrics(Path(metrics_path)))
        if fig is not None:
            _save(fig, run_dir / "loss_curve.png")
            lines += ["## Pretraining", "", "![loss curve](loss_curve.png)", ""]
    if neighbors is not None:
        _save(plots.neighbors_figure(neighbors), run_dir / "neighbors.png")
        lines += [
            "## Nearest neighbours",
            "",
            "Test queries (left) and their nearest training images by cosine similarity of "
            "the features; green frame: same label, red: different.",
            "",
            "![nearest neighbours](neighbors.png)",
            "",
        ]
    if pictures:
        lines += ["## What the task produces", ""]
        used: set[str] = set()
        for caption, images in pictures.items():
            name = _slug(caption)
            while name in used:
                name += "_"
            used.add(name)
            _save(plots.image_grid(images, caption), run_dir / f"{name}.png")
            lines += [f"**{caption}**", "", f"![{caption}]({name}.png)", ""]
    report = run_dir / "report.md"
    atomic_write(report, "\n".join(lines))
    return report
