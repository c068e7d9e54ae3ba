"""Dense Predictive Coding: predict the feature maps of the next frames, told apart from others.

Han, Xie, Zisserman, "Video Representation Learning by Dense Predictive Coding", ICCV 2019
Workshops. https://arxiv.org/abs/1909.04656 (after van den Oord et al.'s CPC, 2018)

Free labels: the future, as in future_frame, but compared in feature space instead of pixels.
The backbone encodes every frame of a window of `past + future` frames to its feature map; conv
layers over the stacked past maps predict the map of each future frame; each predicted cell
must pick the true one out of every cell of every future frame of every clip in the batch
(InfoNCE; under DDP the candidates of all ranks). Other clips' futures differ in what they
show, other cells in where, other frames in when, so the prediction needs all three, where
pixel prediction on Moving MNIST is mostly rewarded for where (docs/video.md).

`negatives: same_cell` keeps only the candidates that where and when cannot rule out: the
same cell of the same future frame in the other clips. Measured on Moving MNIST, the full set
was mostly told apart by position; here only what is in the cell can decide (measured: how
much ink sits where in an 8 px cell is enough, without the digit's identity;
docs/video_experiments.md).

Departures from the paper, for a frame encoder on a CPU: one frame per time step instead of
5-frame blocks through a 3D ResNet, and all future maps predicted at once by conv layers over
the stacked past maps (as future_frame's conv predictor) instead of a ConvGRU rolled forward.
"""

from __future__ import annotations

import torch
from torch import nn

from selfsup.backbones.small_cnn import conv_bn_relu
from selfsup.errors import SelfSupError
from selfsup.losses import paired_info_nce
from selfsup.tasks.base import Batch, Task, require_positive
from selfsup.tasks.clips import map_shape, outline, require_clips
from selfsup.tasks.future_frame import split_past_future


class DensePredictiveCoding(Task):
    name = "dpc"
    takes_clips = True

    def __init__(
        self,
        backbone: nn.Module,
        image_shape: tuple[int, int, int],
        *,
        past: int = 5,
        future: int = 3,
        stride: int = 1,
        dim: int = 128,
        width: int = 256,
        temperature: float = 0.1,
        negatives: str = "all",
    ) -> None:
        """`dim`: the space predictions and true maps are compared in; `width`: the
        aggregator's channels; `negatives`: "all" cells of the batch's future maps, or only
        the "same_cell" of the same frame in the other clips."""
        super().__init__(backbone)
        if past < 1 or future < 1:
            raise SelfSupError(f"dpc needs past >= 1 and future >= 1 frames, got {past}, {future}")
        require_positive(self.name, temperature=temperature)
        self.past, self.future, self.stride, self.dim = past, future, stride, dim
        if negatives not in ("all", "same_cell"):
            raise SelfSupError(f"dpc's negatives must be 'all' or 'same_cell', got {negatives!r}")
        self.temperature, self.negatives = temperature, negatives
        channels = map_shape(backbone, image_shape)[0]
        self.reduce = conv_bn_relu(channels, dim, 1)  # each past map
        self.aggregate = nn.Sequential(
            conv_bn_relu(past * dim, width),
            conv_bn_relu(width, width),
            nn.Conv2d(width, future * dim, 1),
        )
        self.project = nn.Conv2d(channels, dim, 1)  # the true future maps, into the same space

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Feature maps (B, L, C, h, w) of frames (B, L, C', H, W), in one backbone batch."""
        maps = self.encode_map(frames.flatten(0, 1))
        return maps.view(*frames.shape[:2], *maps.shape[1:])

    def predict(self, past_frames: torch.Tensor) -> torch.Tensor:
        """Predicted future maps (B, future, dim, h, w) from the past frames only."""
        maps = self.encode_frames(past_frames)
        batch, past, _, h, w = maps.shape
        stacked = self.reduce(maps.flatten(0, 1)).view(batch, past * self.dim, h, w)
        return self.aggregate(stacked).view(batch, self.future, self.dim, h, w)

    def targets(self, future_frames: torch.Tensor) -> torch.Tensor:
        """The true future maps (B, future, dim, h, w) in the comparison space."""
        maps = self.encode_frames(future_frames)
        projected = self.project(maps.flatten(0, 1))
        return projected.view(*maps.shape[:2], *projected.shape[1:])

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        clips = require_clips(batch, self.name)
        past, future, _ = split_past_future(clips, self.past, self.future, self.stride)
        # (clip, future frame * cell, dim), the same order on both sides.
        n = past.shape[0]
        predicted = self.predict(past).permute(0, 1, 3, 4, 2).reshape(n, -1, self.dim)
        true = self.targets(future).permute(0, 1, 3, 4, 2).reshape(n, -1, self.dim)
        if self.negatives == "all":  # one contest over every (clip, frame, cell)
            predicted, true = predicted.flatten(0, 1), true.flatten(0, 1)
        loss, accuracy = paired_info_nce(predicted, true, self.temperature)
        return {"loss": loss, "accuracy": accuracy}

    @torch.no_grad()
    def show(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        # `images` are clips (N, T, C, H, W). Each clip's predicted next map is compared, cell
        # by cell, with the true next maps of all shown clips; the best match is its pick.
        past, future, _ = split_past_future(images[:8], self.past, self.future, self.stride)
        predicted = nn.functional.normalize(self.predict(past)[:, 0].flatten(2), dim=1)
        true = nn.functional.normalize(self.targets(future[:, :1])[:, 0].flatten(2), dim=1)
        # scores[i, j]: mean over cells of the cosine between clip i's prediction and clip j's.
        scores = torch.einsum("idc,jdc->ij", predicted, true) / predicted.shape[-1]
        picked = scores.argmax(1)
        n = len(picked)
        # One column per clip (the report lays pictures out 8 to a row).
        grid = torch.cat([past[:, -1], future[:, 0], future[picked, 0]])
        wrong = torch.zeros(3, n, dtype=torch.bool)
        wrong[2] = picked.cpu() != torch.arange(n)
        return {
            f"DPC, one clip per column: its last past frame, its true next frame, and the next "
            f"frame its prediction picked among these {n} clips (red: another clip's)": outline(
                grid, wrong.flatten()
            )
        }
