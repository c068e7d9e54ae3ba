"""Shared pieces of the video tasks: getting the clips out of a batch, and motion.

Video data (`moving-mnist:DIR`, `video:DIR`) gives every batch "clips" (B, T, C, H, W) besides
the frames; see selfsup.data.video. The backbone stays a frame encoder: tasks fold time into
the batch, encode, and unfold.
"""

from __future__ import annotations

import torch
from torch import nn

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


def encode_frames(encode, frames: torch.Tensor) -> torch.Tensor:
    """Features (B, L, D) of frames (B, L, C, H, W), encoded as one batch of B*L images."""
    features = encode(frames.flatten(0, 1))
    return features.view(*frames.shape[:2], -1)


def motion(clips: torch.Tensor) -> torch.Tensor:
    """Mean absolute change between consecutive frames (B, T-1): where something moves."""
    return (clips[:, 1:] - clips[:, :-1]).abs().flatten(2).mean(2)


def window_motion(clips: torch.Tensor, span: int) -> torch.Tensor:
    """Total motion inside every window of `span` frames (B, T - span + 1)."""
    steps = motion(clips)
    cumulative = torch.nn.functional.pad(steps.cumsum(1), (1, 0))
    return cumulative[:, span - 1 :] - cumulative[:, : cumulative.shape[1] - span + 1]


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
