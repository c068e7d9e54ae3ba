"""The report's pictures, drawn with matplotlib's object API on the Agg canvas.

matplotlib is imported inside each function (it costs ~0.3 s) and pyplot is never used, so
drawing a report neither needs a display nor changes the caller's matplotlib backend.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

SSL_COLOR = "#1f77b4"
BASELINE_COLORS = {"raw": "#7f7f7f", "random_init": "#9467bd", "supervised": "#d62728"}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig) -> bytes:
    """The figure encoded as PNG (the caller writes it atomically)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def read_metrics(path: Path) -> list[dict]:
    """Rows of a metrics.jsonl; a torn last line (a run killed mid-write) is skipped."""
    rows = []
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def loss_curve(rows: list[dict]):
    """Training loss against step (raw and a moving average); None when nothing to draw."""
    points = [
        (float(r["step"]), float(r["loss"]))
        for r in rows
        if isinstance(r.get("step"), (int, float)) and isinstance(r.get("loss"), (int, float))
    ]
    if not points:
        return None
    steps, losses = zip(*sorted(points), strict=True)
    fig = _figure(6, 3.5)
    ax = fig.add_subplot()
    ax.plot(steps, losses, color=SSL_COLOR, alpha=0.35, lw=1, label="loss")
    window = max(1, len(losses) // 50)
    if window > 1:
        smooth = torch.tensor(losses).unfold(0, window, 1).mean(1).tolist()
        ax.plot(steps[window - 1 :], smooth, color=SSL_COLOR, lw=2, label=f"mean of {window}")
    # The parts of a summed loss (a GAN's d_loss and g_loss, BERT's mlm_loss and nsp_loss) say
    # more than their sum: each gets its own line, averaged as the total is.
    parts = sorted({k for r in rows for k in r if k.endswith("_loss")})
    for i, name in enumerate(parts):
        series = sorted(
            (float(r["step"]), float(r[name]))
            for r in rows
            if isinstance(r.get("step"), (int, float)) and isinstance(r.get(name), (int, float))
        )
        if len(series) < window:
            continue
        xs, ys = zip(*series, strict=True)
        ys = torch.tensor(ys).unfold(0, window, 1).mean(1).tolist()
        ax.plot(xs[window - 1 :], ys, lw=1.2, ls="--", color=f"C{i + 1}", label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("pretext loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def label_efficiency(results: dict, labels: dict[tuple[str, str], str]):
    """Accuracy against % of labels (log x): SSL lines bold, baselines dashed."""
    series: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for row in results.get("rows", []):
        key = (row["method"], row["protocol"])
        series.setdefault(key, []).append((100 * row["fraction"], row["accuracy"]))
    if not series:
        return None
    fig = _figure(6.5, 4.2)
    ax = fig.add_subplot()
    markers = "osD^v<>p*"
    for i, (key, points) in enumerate(series.items()):
        xs, ys = zip(*sorted(points), strict=True)
        ssl = key[0] == "ssl"
        ax.plot(
            xs,
            ys,
            marker=markers[i % len(markers)],
            lw=2.6 if ssl else 1.3,
            ls="-" if ssl else ("-." if key[1] in ("linear", "logreg") else "--"),
            color=None if ssl else BASELINE_COLORS.get(key[0]),
            label=labels.get(key, " ".join(key)),
        )
    ax.set_xscale("log")
    fractions = sorted({100 * f for f in results.get("fractions", [])})
    if fractions:
        ax.set_xticks(fractions, [f"{f:g}%" for f in fractions])
        ax.minorticks_off()
    ax.set_xlabel("share of the training labels used")
    # Video runs score "both digits right", named first in their metric's description.
    ax.set_ylabel(results.get("metric", "test accuracy").split(" (")[0].split(";")[0])
    ax.grid(alpha=0.3)
    # Beside the axes, not on them: at 100% labels the curves meet where a legend would sit.
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def _hwc(image: torch.Tensor):
    """A (C, H, W) uint8 or [0, 1] float image as what imshow wants."""
    image = image.detach().cpu()
    image = image.clamp(0, 1) if image.is_floating_point() else image.float() / 255
    if image.shape[0] == 1:
        return image[0].numpy(), "gray"
    if image.shape[0] != 3:  # e.g. 2-channel (L, ab) pictures: show the first channel
        return image[0].numpy(), "gray"
    return image.permute(1, 2, 0).numpy(), None


def _show(ax, image: torch.Tensor) -> None:
    array, cmap = _hwc(image)
    ax.imshow(array, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def neighbors_figure(grid: dict):
    """Queries (left column) and their nearest training images, framed green when the label
    matches the query's and red when not."""
    queries, neighbors = grid["queries"], grid["neighbors"]
    n_queries, k = neighbors.shape[:2]
    classes = grid.get("classes")

    def name(label: int) -> str:
        return classes[label] if classes and 0 <= label < len(classes) else str(label)

    fig = _figure(1.3 * (k + 1), 1.35 * n_queries)
    axes = fig.subplots(n_queries, k + 1, squeeze=False)
    for q in range(n_queries):
        query_label = int(grid["query_labels"][q])
        _show(axes[q][0], queries[q])
        axes[q][0].set_title(f"query: {name(query_label)}", fontsize=7)
        for j in range(k):
            ax = axes[q][j + 1]
            _show(ax, neighbors[q, j])
            label = int(grid["neighbor_labels"][q, j])
            color = "#2ca02c" if label == query_label else "#d62728"
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(3)
            ax.set_title(f"{name(label)} {float(grid['similarities'][q, j]):.2f}", fontsize=7)
    return fig


def image_grid(images: torch.Tensor, caption: str = "", columns: int = 8):
    """A picture grid (N, C, H, W) (uint8, or float in [0, 1]) as one figure."""
    n = int(images.shape[0])
    columns = max(1, min(columns, n))
    rows = max(1, -(-n // columns))
    fig = _figure(1.2 * columns, 1.2 * rows + (0.3 if caption else 0))
    axes = fig.subplots(rows, columns, squeeze=False)
    for i in range(rows * columns):
        ax = axes[i // columns][i % columns]
        if i < n:
            _show(ax, images[i])
        else:
            ax.axis("off")
    if caption:
        fig.suptitle(caption, fontsize=9)
    return fig
