"""Shuffle and Learn: Unsupervised Learning using Temporal Order Verification.

Misra, Zitnick, Hebert, ECCV 2016. https://arxiv.org/abs/1603.08561

Free labels: from five frames a < b < c < d < e of a clip, taken where there is motion, the
tuple (b, c, d) is in temporal order (positive) and (b, a, d) or (b, e, d), the middle frame
replaced by one from outside the pair, is not (negative). The backbone embeds each frame, the
three features are concatenated in tuple order and a small head says whether the order is
right (binary cross-entropy); half of every batch is positive. Telling the two apart needs
where things are and how they move, not just what the frame looks like on average.

`frame_shift: N` moves each frame of a tuple by its own random offset of up to N pixels. On
Moving MNIST the absolute place of a blob then says less about time; the layout of the digits
relative to each other still does, and reading it needs to know which digit is which (the
intent; docs/video_experiments.md has what it measured).

`frame_turns: true` (or a probability P: only that share of the frames) turns each frame of a
tuple by its own random multiple of 90 degrees. Where the digits are then says when only once
the network knows which way up each frame is, and that needs what the digits look like (the
question RotNet asks, Gidaris et al. 2018), so order can no longer be read off blob positions
alone. `frame_flips: true` mirrors each frame left-right or not, on its own (the up-down layout
is left to read). `windows: crossing` takes tuples from where objects overlap instead of where
they move, so that which blob is which decides the order. `foreign: P` makes a share P of the
negatives (b, x, d) with x the frame of another clip in the batch whose coarse layout (8x8 mean
ink) is closest to the true middle frame's: where the ink is then fits the order, so only what
the frame shows can give x away. `layout_expert: true` is a product of experts (Clark et al.
2019, Don't Take the Easy Way Out): an MLP on the frames' 8x8 layouts learns what the layout
alone tells, and the backbone's head is trained on the sum of both verdicts with the expert's
held fixed, so the backbone is pushed only where the layout leaves the answer open.

`negatives: batch` asks the same question as a choice among many, not a yes or no: which
frame lies between b and d? The candidates are c, the clip's own outside frames a and e (the
paper's negatives), and all five frames of every other clip in the batch; the same head scores
each (b, x, d) and a softmax over the candidates is trained to pick c (cross-entropy). One
frame from elsewhere against the true one is told apart by stroke and ink; hundreds of them,
as MICLe's negatives, need what the clip shows (docs/video_experiments.md). `lookalikes: K`
adds, for each clip, the K frames of other clips laid out most like c, and `frame_views`
(fields of selfsup.augment.ViewAugment, e.g. {crop_scale: [0.85, 1], blur_p: 0.5}) gives every
frame a view of its own, so that matching a candidate to b and d pixel by pixel fails.
docs/video_experiments.md has what each of these measured.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.augment import (
    ViewAugment,
    horizontal_flip,
    light_augment,
    random_quarter_turns,
    random_translate,
    views_from,
)
from selfsup.data.video import check_window, gather_frames, sample_windows
from selfsup.errors import SelfSupError
from selfsup.tasks.base import Batch, Task
from selfsup.tasks.clips import (
    closest_frame_elsewhere,
    coarse_layout,
    make_readout,
    mlp,
    outline,
    read_frames,
    require_clips,
    window_motion,
)

LAYOUT_CELLS = 8  # the layout expert sees each frame's mean ink on an 8x8 grid
NEGATIVES = ("pair", "batch")


def crossing_weights(clips: torch.Tensor, gap: int) -> torch.Tensor:
    """Per possible start of a 5-frame window (`gap` apart), how much ink its most overlapped
    frame hides (B, starts): where objects cross, the frame holds less ink than the clip's
    fullest frame (Moving MNIST keeps the brighter pixel where digits overlap)."""
    starts = clips.shape[1] - check_window(clips, 5, gap) + 1
    ink = clips.flatten(2).sum(2)  # (B, T)
    hidden = ink.amax(1, keepdim=True) - ink
    frames = [hidden[:, k * gap : k * gap + starts] for k in range(5)]
    return torch.stack(frames).amax(0) ** 2


def five_frames(
    clips: torch.Tensor, gap: int, windows: str = "motion"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames a..e of each clip, `gap` apart, in a window drawn in proportion to its motion
    (`windows="motion"`) or to the square of the ink its most overlapped frame hides
    ("crossing"): (frames (B, 5, C, H, W), frame indices (B, 5))."""
    if windows == "crossing":
        weights = crossing_weights(clips, gap)
    else:
        weights = window_motion(clips, 4 * gap + 1)
    return sample_windows(clips, 5, gap, weights=weights)


def order_tuples(
    clips: torch.Tensor, gap: int, windows: str = "motion", foreign: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One frame tuple per clip: (tuples (B, 3, C, H, W), labels (B,) 1.0 = in temporal order,
    frame indices (B, 3)). Frames a..e lie `gap` apart in a window drawn in proportion to its
    motion (`windows="motion"`) or to the square of the ink its most overlapped frame hides
    ("crossing"); exactly half the tuples (rounded up) are positives (b, c, d). A `foreign`
    share of the negatives is (b, x, d) instead, x the frame of another clip laid out most like
    c (its index is then -1)."""
    batch = clips.shape[0]
    _, five = five_frames(clips, gap, windows)
    positive = torch.zeros(batch, dtype=torch.bool, device=clips.device)
    positive[torch.randperm(batch, device=clips.device)[: (batch + 1) // 2]] = True
    before_or_after = torch.rand(batch, device=clips.device) < 0.5
    outside = torch.where(before_or_after, five[:, 0], five[:, 4])
    middle = torch.where(positive, five[:, 2], outside)
    index = torch.stack([five[:, 1], middle, five[:, 3]], dim=1)
    tuples = gather_frames(clips, index)
    if not foreign:  # draws nothing more: runs without foreign frames stay as they were
        return tuples, positive.float(), index
    swap = ~positive & (torch.rand(batch, device=clips.device) < foreign)
    if swap.any():
        rows = swap.nonzero().squeeze(1)
        clip, frame = closest_frame_elsewhere(clips, clips[rows, five[rows, 2]], rows)
        tuples[rows, 1] = clips[clip[:, 0], frame[:, 0]]
        index[rows, 1] = -1
    return tuples, positive.float(), index


class FrameOrder(Task):
    name = "frame_order"
    takes_clips = True

    def __init__(
        self,
        backbone: nn.Module,
        image_shape: tuple[int, int, int],
        *,
        gap: int = 3,
        hidden_dim: int = 256,
        augment: bool = True,
        readout: str = "map",
        frame_shift: int = 0,
        frame_turns: float = 0.0,
        frame_flips: bool = False,
        windows: str = "motion",
        foreign: float = 0.0,
        layout_expert: bool = False,
        negatives: str = "pair",
        lookalikes: int = 0,
        frame_views: dict | None = None,
    ) -> None:
        """`readout`: "map" (default) reads each frame's feature map through a MapReadout,
        "pooled" its pooled features (see MapReadout for why the map). `frame_shift`,
        `frame_turns`, `frame_flips`, `windows` ("motion" or "crossing"), `foreign` and
        `layout_expert`: see the module docstring (0 / false / "motion" = off). `negatives`: "pair"
        (the paper's yes-or-no question) or "batch" (the middle frame among every frame of the
        batch, see the module docstring)."""
        super().__init__(backbone)
        if frame_shift < 0:
            raise SelfSupError(f"frame_order frame_shift must be >= 0 pixels, got {frame_shift}")
        if not 0.0 <= float(frame_turns) <= 1.0:
            raise SelfSupError(
                f"frame_order frame_turns is a probability in [0, 1], got {frame_turns}"
            )
        if frame_turns and image_shape[1] != image_shape[2]:
            raise SelfSupError(
                f"frame_order frame_turns needs square frames, got {image_shape[1]}x"
                f"{image_shape[2]}; set --image-size or turn frame_turns off"
            )
        if not 0.0 <= float(foreign) <= 1.0:
            raise SelfSupError(f"frame_order foreign is a probability in [0, 1], got {foreign}")
        if windows not in ("motion", "crossing"):
            raise SelfSupError(f"frame_order windows is 'motion' or 'crossing', got {windows!r}")
        if negatives not in NEGATIVES:
            raise SelfSupError(
                f"frame_order negatives is one of {', '.join(NEGATIVES)}, got {negatives!r}"
            )
        if negatives == "batch" and (foreign or layout_expert or frame_turns or frame_flips):
            raise SelfSupError(
                "frame_order negatives=batch already draws frames from other clips and asks no "
                "yes-or-no question: leave foreign, layout_expert, frame_turns and frame_flips off"
            )
        if lookalikes < 0 or (lookalikes and negatives != "batch"):
            raise SelfSupError(
                f"frame_order lookalikes is a number of frames >= 0 for negatives=batch, got "
                f"{lookalikes} with negatives={negatives}"
            )
        if frame_views is not None and negatives != "batch":
            raise SelfSupError("frame_order frame_views is for negatives=batch")
        # Off unless asked for: each field named turns that part of the views on.
        still = ViewAugment((1.0, 1.0), (1.0, 1.0), flip_p=0, jitter_p=0, gray_p=0, blur_p=0)
        self.frame_views = views_from(frame_views, still) if frame_views else None
        self.negatives, self.lookalikes = negatives, lookalikes
        self.gap, self.augment, self.frame_shift = gap, augment, frame_shift
        self.frame_turns, self.frame_flips, self.windows = float(frame_turns), frame_flips, windows
        self.foreign = float(foreign)
        self.readout = make_readout(backbone, readout)
        dim = self.readout.dim if self.readout is not None else backbone.feature_dim
        self.head = mlp(3 * dim, hidden_dim, 1)
        cells = LAYOUT_CELLS**2
        self.layout_expert = mlp(3 * cells, hidden_dim, 1) if layout_expert else None

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        clips = require_clips(batch, self.name)
        if self.negatives == "batch":
            return self.middle_choice_step(clips)
        tuples, labels, _ = order_tuples(clips, self.gap, self.windows, self.foreign)
        tuples = self.augment_frames(tuples)
        logits = self.head_logits(tuples)
        if self.layout_expert is None:
            return {
                "loss": F.binary_cross_entropy_with_logits(logits, labels),
                "accuracy": ((logits > 0).float() == labels).float().mean(),
            }
        # Product of experts (Clark et al. 2019): the layout expert learns what where the ink
        # is tells on its own; the backbone's head is trained on the sum with the expert's
        # verdict held fixed, so it is pushed only where the layout leaves the answer open.
        bias = self.layout_logits(tuples)
        joint = logits + bias.detach()
        return {
            "loss": F.binary_cross_entropy_with_logits(bias, labels)
            + F.binary_cross_entropy_with_logits(joint, labels),
            "accuracy": ((joint > 0).float() == labels).float().mean(),
            "layout_accuracy": ((bias > 0).float() == labels).float().mean(),
        }

    def augment_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (B, N, C, H, W) of each clip's question: each frame's own shift, flip, turn
        and view (the options that ask for them), then one crop and flip for all N frames of a
        row (its N frames as channels of one image), so that the augmentation cannot hint at
        which frame was swapped in."""
        each = frames.flatten(0, 1)
        each = random_translate(each, self.frame_shift)
        if self.frame_flips:
            each = horizontal_flip(each)
        if self.frame_turns:
            each = random_quarter_turns(each, p=self.frame_turns)
        if self.frame_views is not None:
            each = self.frame_views(each)
        frames = each.view_as(frames)
        if self.augment:
            frames = light_augment(frames.flatten(1, 2)).view_as(frames)
        return frames

    def middle_choice_step(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        """negatives=batch: for each clip, which of the batch's frames lies between its b and d."""
        batch = len(clips)
        five, _ = five_frames(clips, self.gap, self.windows)
        rows = torch.arange(batch, device=clips.device)
        frames = five
        if self.lookalikes:
            # Frames of other clips laid out most like c: where the ink is cannot reject them.
            clip, frame = closest_frame_elsewhere(clips, five[:, 2], rows, k=self.lookalikes)
            frames = torch.cat([five, clips[clip, frame]], dim=1)  # (B, 5 + K, C, H, W)
        frames = self.augment_frames(frames)  # the look-alikes with their clip's own frames
        features = read_frames(self, self.readout, frames)  # (B, 5 + K, D)
        logits = self.middle_logits(features[:, 1], features[:, 3], features.flatten(0, 1))
        per_clip = frames.shape[1]
        # b and d themselves are no answer to "what lies between b and d".
        own_ends = torch.zeros_like(logits, dtype=torch.bool)
        own_ends[rows, rows * per_clip + 1] = own_ends[rows, rows * per_clip + 3] = True
        logits = logits.masked_fill(own_ends, float("-inf"))
        target = rows * per_clip + 2
        own = logits.view(batch, batch, per_clip)[rows, rows]  # (B, 5 + K): its own candidates
        logs = {
            "loss": F.cross_entropy(logits, target),
            "accuracy": (logits.argmax(1) == target).float().mean(),
            # The paper's question inside the choice: c scored above a and e of its own clip.
            "order_accuracy": (own[:, 2] > own[:, [0, 4]].amax(1)).float().mean(),
        }
        if self.lookalikes:
            logs["lookalike_accuracy"] = (own[:, 2] > own[:, 5:].amax(1)).float().mean()
        return logs

    def middle_logits(
        self, first: torch.Tensor, last: torch.Tensor, candidates: torch.Tensor
    ) -> torch.Tensor:
        """The head's score (B, N) of every tuple (first_i, candidate_j, last_i), from frame
        features first, last (B, D) and candidates (N, D), without building the B x N tuples:
        the head's first layer is a sum over the three frames' blocks of its weights."""
        linear, activation, out = self.head
        w_first, w_middle, w_last = linear.weight.split(first.shape[1], dim=1)
        context = first @ w_first.T + last @ w_last.T + linear.bias  # (B, H)
        hidden = activation(context[:, None] + (candidates @ w_middle.T)[None])  # (B, N, H)
        return out(hidden).squeeze(2)

    def head_logits(self, tuples: torch.Tensor) -> torch.Tensor:
        """The backbone's head's verdict (B,) on tuples (B, 3, C, H, W)."""
        return self.head(read_frames(self, self.readout, tuples).flatten(1)).squeeze(1)

    def layout_logits(self, tuples: torch.Tensor) -> torch.Tensor:
        """The layout expert's verdict (B,) on tuples (B, 3, C, H, W) from where their ink is."""
        layout = coarse_layout(tuples.flatten(0, 1), LAYOUT_CELLS).view(len(tuples), -1)
        return self.layout_expert(layout)[:, 0]

    def order_logits(self, tuples: torch.Tensor) -> torch.Tensor:
        """The task's verdict (B,) on tuples (B, 3, C, H, W): > 0 means "in order"."""
        logits = self.head_logits(tuples)
        return logits if self.layout_expert is None else logits + self.layout_logits(tuples)

    @torch.no_grad()
    def show(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        # `images` are clips (N, T, C, H, W). Each row: a sorted tuple | a shuffled one.
        clips = images[:16]
        if len(clips) < 16:  # enough tuples for 6 of each kind (copies: foreign frames differ)
            clips = clips.repeat(-(-16 // len(clips)), 1, 1, 1, 1)[:16]
        tuples, labels, _ = order_tuples(clips, self.gap, self.windows, self.foreign)
        rows = min(int(labels.sum()), int((1 - labels).sum()), 6)
        sorted_, shuffled = tuples[labels == 1][:rows], tuples[labels == 0][:rows]
        # Mid-grey, not black: on black-background clips a black panel looks like an empty frame.
        blank = torch.full_like(tuples[:rows, :1], 0.5)
        grid = torch.cat([sorted_, blank, shuffled, blank], dim=1).flatten(0, 1)
        wrong = torch.zeros(8, dtype=torch.bool)
        wrong[5] = True  # the swapped-in middle frame of the shuffled tuple
        mask = wrong.repeat(rows)
        return {
            "Frame order: left, a tuple in temporal order; right, a shuffled one "
            "(red: the frame from outside the pair; grey panels separate them)": outline(grid, mask)
        }
