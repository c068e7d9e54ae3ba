"""Shared pieces of the video tasks: getting the clips out of a batch, and motion.

Video data (`moving-mnist:DIR`, `video:DIR`) gives every batch "clips" (B, T, C, H, W) besides
the frames; see selfsup.data.video. The backbone stays a frame encoder: tasks fold time into
the batch, encode, and unfold.
"""

from __future__ import annotations

import torch
from torch import nn

from selfsup.data.video import check_window
from selfsup.errors import SelfSupError
from selfsup.tasks.base import Batch


def require_clips(batch: Batch, task: str) -> torch.Tensor:
    """batch["clips"], or a one-line error saying which data the task needs."""
    clips = batch.get("clips")
    if clips is None or clips.ndim != 5:
        raise SelfSupError(
            f"{task} needs video clips: use --data moving-mnist:DIR (MNIST folder) or "
            "--data video:DIR (clip folders or .npy arrays)"
        )
    return clips


def motion(clips: torch.Tensor) -> torch.Tensor:
    """Mean absolute change between consecutive frames (B, T-1): where something moves."""
    return (clips[:, 1:] - clips[:, :-1]).abs().flatten(2).mean(2)


def window_motion(clips: torch.Tensor, span: int) -> torch.Tensor:
    """Total motion inside every window of `span` frames (B, T - span + 1)."""
    check_window(clips, span)
    steps = motion(clips)
    cumulative = torch.nn.functional.pad(steps.cumsum(1), (1, 0))
    return cumulative[:, span - 1 :] - cumulative[:, : cumulative.shape[1] - span + 1]


def coarse_layout(frames: torch.Tensor, cells: int = 8) -> torch.Tensor:
    """Where the ink is: frames (N, C, H, W) -> their channel mean average-pooled to cells x
    cells, flattened (N, cells * cells)."""
    pooled = nn.functional.adaptive_avg_pool2d(frames.float().mean(1, keepdim=True), cells)
    return pooled.flatten(1)


def closest_frame_elsewhere(
    clips: torch.Tensor, targets: torch.Tensor, own: torch.Tensor, cells: int = 8, k: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each target frame (N, C, H, W) from clip `own` (N,), the `k` frames of other clips
    (B, T, C, H, W) whose coarse_layout is closest (L2), closest first: where the ink is
    matches, what it shows need not. Returns (clip indices (N, k), frame indices (N, k))."""
    batch, frames = clips.shape[:2]
    if batch < 2:
        raise SelfSupError("a frame from another clip needs at least 2 clips in the batch")
    pool = coarse_layout(clips.flatten(0, 1), cells)  # (B * T, cells * cells)
    distance = torch.cdist(coarse_layout(targets, cells), pool)  # (N, B * T)
    same_clip = own[:, None] == torch.arange(batch, device=clips.device).repeat_interleave(frames)
    best = distance.masked_fill(same_clip, float("inf")).topk(k, dim=1, largest=False).indices
    return best // frames, best % frames


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)
    )


def outline(frames: torch.Tensor, mask: torch.Tensor, color=(1.0, 0.1, 0.1)) -> torch.Tensor:
    """RGB copies of frames (N, C, H, W) with a 2-pixel coloured border where mask (N,) is set."""
    rgb = frames.expand(-1, 3, -1, -1).clone() if frames.shape[1] == 1 else frames.clone()
    border = torch.ones_like(rgb[0, 0], dtype=torch.bool)
    border[2:-2, 2:-2] = False
    paint = torch.tensor(color, dtype=rgb.dtype, device=rgb.device)[:, None]
    for i in torch.nonzero(mask).flatten().tolist():
        rgb[i][:, border] = paint
    return rgb


class MapReadout(nn.Module):
    """Frame features that keep where things are, for the temporal-order tasks.

    The backbone's pooled features barely depend on position, yet frame order on Moving MNIST
    is a question of where the digits are. Read from pooled features, the task pushed the
    backbone to encode position through its borders, and its features ended up worse than a
    random network's at telling the digits apart (docs/video.md). The papers' heads (CaffeNet's
    fc6 in Misra et al., AlexNet's in Fernando et al.) see the whole conv5 map, so this reads
    the map too: a 1x1 conv cuts the channels, a grid x grid average pool keeps the layout.
    """

    def __init__(self, in_channels: int, channels: int = 32, grid: int = 4) -> None:
        super().__init__()
        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.grid = grid
        self.dim = channels * grid * grid

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.adaptive_avg_pool2d(self.reduce(feature_map), self.grid)
        return pooled.flatten(1)


READOUTS = ("map", "pooled")


def map_shape(backbone: nn.Module, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """(channels, h, w) of the backbone's feature map for frames of `image_shape`."""
    from selfsup.backbones import feature_map

    training = backbone.training
    backbone.eval()  # the probe must not touch BatchNorm statistics
    with torch.no_grad():
        probe = feature_map(backbone, torch.zeros(1, *image_shape))
    backbone.train(training)
    return tuple(probe.shape[1:])


def make_readout(backbone: nn.Module, readout: str) -> MapReadout | None:
    """A task's `readout` option: "map" (a MapReadout) or "pooled" (None: pooled features)."""
    if readout not in READOUTS:
        raise SelfSupError(f"unknown readout {readout!r}; choose one of: {', '.join(READOUTS)}")
    return MapReadout(backbone.feature_dim) if readout == "map" else None


def read_frames(task, readout: MapReadout | None, frames: torch.Tensor) -> torch.Tensor:
    """Features (B, L, D) of frames (B, L, C, H, W), through `readout` if there is one."""
    flat = frames.flatten(0, 1)
    features = task.encode(flat) if readout is None else readout(task.encode_map(flat))
    return features.view(*frames.shape[:2], -1)
