"""Future frame prediction (predictive coding): forecast the next frames from the past ones.

Srivastava, Mansimov, Salakhutdinov, "Unsupervised Learning of Video Representations using
LSTMs", ICML 2015 (the future predictor); Lotter, Kreiman, Cox, "Deep Predictive Coding
Networks for Video Prediction and Unsupervised Learning", ICLR 2017.

Free labels: the future itself. From a window of `past + future` frames, the backbone encodes
each past frame, a predictor (conv or GRU, below) turns them into one code per future frame,
and a small convolutional decoder draws each predicted frame. The loss is L1 or L2 against the
true frames, or per-pixel binary cross-entropy (`loss: bce`, Srivastava et al.'s choice for
Moving MNIST: each pixel's value is read as the probability that it is ink). The past
features must say which digits are where and how they move, so that they can be redrawn
further along their paths. The predictor only ever sees the past frames.

Two predictors. `gru` (Srivastava et al.): the frame features, read from the backbone's feature
map (clips.MapReadout), go through a GRU, and one vector per future frame is drawn. `conv`
(convolutional, as Lotter et al.'s predictions are made on feature maps): the past feature maps,
stacked, go through conv layers to one map per future frame, drawn by an upsampling decoder.
With the conv predictor every cell of the map must say what is there to be redrawn, not only
where; on Moving MNIST that is the digit's shape, the thing the downstream task asks about.

`reconstruct: true` is Srivastava et al.'s composite model (their best): the predictor also
redraws the past frames it was given, so the features must keep what the frames show (an
autoencoder's job) as well as where it goes next (the future's). Measured on Moving MNIST, the
future alone keeps only where the digits are (docs/video.md). Conv predictor only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.data.video import sample_windows
from selfsup.errors import SelfSupError
from selfsup.tasks.base import Batch, Task
from selfsup.tasks.clips import make_readout, map_shape, read_frames, require_clips
from selfsup.tasks.colorization import upsampling_head


def split_past_future(
    clips: torch.Tensor, past: int, future: int, stride: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random window per clip cut into (past frames (B, past, ...), future frames
    (B, future, ...), frame indices (B, past + future)); every past frame precedes the future."""
    window, index = sample_windows(clips, past + future, stride)
    return window[:, :past], window[:, past:], index


class FrameDecoder(nn.Module):
    """A feature vector -> a (C, size, size) frame: linear to width x size/8 x size/8, then 3 x
    (upsample 2x, conv3x3, BN, ReLU) halving the channels each time (the large maps are the
    costly ones on a CPU), and an output conv giving pixel logits."""

    def __init__(self, in_dim: int, channels: int, size: int, width: int = 64) -> None:
        super().__init__()
        if size % 8:
            raise SelfSupError(
                f"future_frame needs frames whose side is a multiple of 8, got {size}"
            )
        self.start, self.width = size // 8, width
        self.fc = nn.Linear(in_dim, width * self.start**2)
        layers: list[nn.Module] = []
        for _ in range(3):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(width, width // 2, 3, padding=1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(inplace=True),
            ]
            width //= 2
        self.body = nn.Sequential(*layers, nn.Conv2d(width, channels, 3, padding=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel logits; the caller applies the sigmoid (or BCE-with-logits)."""
        x = F.relu(self.fc(z)).view(-1, self.width, self.start, self.start)
        return self.body(x)


class ConvPredictor(nn.Module):
    """Past feature maps (B, past, C, h, w) -> future frames (B, future, out_channels, H, W).

    Each past map is cut to `channels` by a 1x1 conv; the maps are stacked on channels, two
    conv3x3 layers make one `channels` map per future frame, and an upsampling decoder
    (`doublings` x2 steps) draws each one.
    """

    def __init__(
        self, in_channels: int, past: int, future: int, out_channels: int, doublings: int,
        channels: int = 32, width: int = 128,
    ) -> None:  # fmt: skip
        super().__init__()
        self.future, self.channels = future, channels
        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.body = nn.Sequential(
            nn.Conv2d(past * channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, future * channels, 1),
        )
        self.decoder = upsampling_head(channels, out_channels, doublings)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Pixel logits (B, future, C, H, W); the caller applies the sigmoid."""
        batch, past, _, h, w = maps.shape
        stacked = self.reduce(maps.flatten(0, 1)).view(batch, past * self.channels, h, w)
        predicted = F.relu(self.body(stacked)).view(batch * self.future, self.channels, h, w)
        frames = self.decoder(predicted)
        return frames.view(batch, self.future, *frames.shape[1:])


PREDICTORS = ("gru", "conv")
LOSSES = ("l1", "l2", "bce")


class FutureFrame(Task):
    name = "future_frame"
    takes_clips = True

    def __init__(
        self,
        backbone: nn.Module,
        image_shape: tuple[int, int, int],
        *,
        past: int = 6,
        future: int = 4,
        stride: int = 1,
        hidden_dim: int = 256,
        loss: str = "l1",
        predictor: str = "conv",
        readout: str = "map",
        reconstruct: bool = False,
    ) -> None:
        """`predictor`: "conv" (default) or "gru" (see the module docstring). `readout`, for
        the GRU only: "map" (default) feeds it each frame's feature map through a MapReadout,
        "pooled" the pooled features (see MapReadout for why the map). `reconstruct`: also
        redraw the past frames (the composite model; conv predictor only)."""
        super().__init__(backbone)
        if loss not in LOSSES:
            raise SelfSupError(
                f"future_frame loss must be one of {', '.join(LOSSES)}, got {loss!r}"
            )
        if predictor not in PREDICTORS:
            raise SelfSupError(
                f"unknown predictor {predictor!r}; choose one of: {', '.join(PREDICTORS)}"
            )
        if past < 1 or future < 1:
            raise SelfSupError(
                f"future_frame needs past >= 1 and future >= 1 frames, got {past}, {future}"
            )
        if reconstruct and predictor != "conv":
            raise SelfSupError(
                "future_frame's reconstruct: true needs predictor: conv (the GRU predictor "
                "has no decoder for the past frames)"
            )
        channels, size, _ = image_shape
        self.past, self.future, self.stride, self.loss = past, future, stride, loss
        self.predictor, self.reconstruct = predictor, reconstruct
        if predictor == "conv":
            map_channels, _, map_size = map_shape(backbone, image_shape)
            doublings = round(math.log2(size / map_size))
            if map_size * 2**doublings != size:
                raise SelfSupError(
                    f"future_frame's conv predictor needs a feature map that doubles up to the "
                    f"frame size; {size} px frames give a {map_size} px map. Use "
                    "predictor: gru, or a frame size that is a power of 2 times the map's"
                )
            # With reconstruct the same layers also give one map per past frame, drawn after the
            # future ones.
            drawn = future + (past if reconstruct else 0)
            self.conv = ConvPredictor(map_channels, past, drawn, channels, doublings)
        else:
            self.readout = make_readout(backbone, readout)
            dim = self.readout.dim if self.readout is not None else backbone.feature_dim
            self.rnn = nn.GRU(dim, hidden_dim, batch_first=True)
            self.decoder = FrameDecoder(hidden_dim, channels, size)

    def predict(self, past_frames: torch.Tensor) -> torch.Tensor:
        """The next `future` frames (B, future, C, H, W) in [0, 1] from the past frames."""
        return torch.sigmoid(self.predict_logits(past_frames))

    def predict_logits(self, past_frames: torch.Tensor) -> torch.Tensor:
        """Pixel logits of the next `future` frames from the past frames (B, past, ...)."""
        return self.draw_logits(past_frames)[:, : self.future]

    def draw_logits(self, past_frames: torch.Tensor) -> torch.Tensor:
        """Pixel logits of the next `future` frames, then, with `reconstruct`, of the `past`
        frames redrawn: (B, future [+ past], C, H, W)."""
        if self.predictor == "conv":
            maps = self.encode_map(past_frames.flatten(0, 1))
            return self.conv(maps.view(*past_frames.shape[:2], *maps.shape[1:]))
        features = read_frames(self, self.readout, past_frames)
        outputs, state = self.rnn(features)
        hidden = [outputs[:, -1]]
        no_input = features.new_zeros(features.shape[0], 1, features.shape[2])
        for _ in range(self.future - 1):
            # Roll forward on the state alone (the paper's "unconditioned" future predictor):
            # no true frame enters after the past.
            step, state = self.rnn(no_input, state)
            hidden.append(step[:, 0])
        frames = self.decoder(torch.stack(hidden, dim=1).flatten(0, 1))  # one decoder batch
        return frames.view(past_frames.shape[0], self.future, *frames.shape[1:])

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        clips = require_clips(batch, self.name)
        past, future, _ = split_past_future(clips, self.past, self.future, self.stride)
        logits = self.draw_logits(past)
        targets = torch.cat([future, past], dim=1) if self.reconstruct else future
        drawn = torch.sigmoid(logits)
        if self.loss == "bce":
            loss = F.binary_cross_entropy_with_logits(logits, targets)
        else:
            loss = (F.l1_loss if self.loss == "l1" else F.mse_loss)(drawn, targets)
        # The same yardstick whatever the loss, against the baseline to beat: repeating the
        # last past frame.
        predicted = drawn[:, : self.future].detach()
        logs = {
            "loss": loss,
            "l1": F.l1_loss(predicted, future),
            "copy_last_l1": F.l1_loss(past[:, -1:].expand_as(future), future),
        }
        if self.reconstruct:
            logs["past_l1"] = F.l1_loss(drawn[:, self.future :].detach(), past)
        return logs

    @torch.no_grad()
    def show(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        # `images` are clips (N, T, C, H, W). Each row: up to 4 true future frames, then the
        # same number predicted from the past.
        past, future, _ = split_past_future(images[:8], self.past, self.future, self.stride)
        drawn = torch.sigmoid(self.draw_logits(past))
        k = min(4, self.future)
        grid = torch.cat([future[:, :k], drawn[:, :k]], dim=1).flatten(0, 1)
        pictures = {
            f"Future frames: left, the true next {k} frames; right, predicted from the "
            f"{self.past} frames before": grid
        }
        if self.reconstruct:
            k = min(4, self.past)
            redrawn = drawn[:, self.future : self.future + k]
            pictures[f"Past frames: left, the first {k} given; right, redrawn"] = torch.cat(
                [past[:, :k], redrawn], dim=1
            ).flatten(0, 1)
        return pictures
