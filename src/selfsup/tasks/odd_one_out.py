"""Odd-one-out networks (O3N): Self-Supervised Video Representation Learning With Odd-One-Out
Networks. Fernando, Bilen, Gavves, Gould, CVPR 2017. https://arxiv.org/abs/1611.06646

Free labels: from one clip, `questions` short subsequences of `length` frames are drawn; all
are in temporal order except one, whose frames are shuffled (not merely reversed). The network
must say which one is odd. Each subsequence is embedded by the backbone (per frame) and an
order-aware MLP over the concatenated frame features; each embedding is scored against the mean
of all of them (so the answer does not depend on where the odd one sits) and a softmax over the
scores picks the odd one (cross-entropy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.data.video import gather_frames, sample_windows
from selfsup.errors import SelfSupError
from selfsup.tasks.base import Batch, Task
from selfsup.tasks.clips import make_readout, mlp, outline, read_frames, require_clips


def shuffled_orders(length: int, batch: int, device) -> torch.Tensor:
    """(batch, length) permutations of 0..length-1 that are neither increasing nor decreasing.

    Reversed order is excluded too: bouncing digits look just as plausible played backwards,
    so a reversed subsequence would be an unanswerable question.
    """
    perms = torch.argsort(torch.rand(batch, length, device=device), dim=1)
    steps = perms[:, 1:] - perms[:, :-1]
    monotonic = (steps > 0).all(1) | (steps < 0).all(1)
    # Swapping the first two frames of the identity is never monotonic (length >= 3).
    swapped = torch.arange(length, device=device)
    swapped[:2] = swapped[:2].flip(0)
    return torch.where(monotonic[:, None], swapped, perms)


def odd_questions(
    clips: torch.Tensor, questions: int, length: int, stride: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(subsequences (B, questions, length, C, H, W), odd position (B,), frame indices
    (B, questions, length)): each subsequence is an ordered window of the clip, except the one
    at the odd position, whose frames are permuted (never in order, nor reversed)."""
    if length < 3:
        raise SelfSupError(f"odd_one_out needs subsequences of at least 3 frames, got {length}")
    batch = clips.shape[0]
    windows = [sample_windows(clips, length, stride)[1] for _ in range(questions)]
    index = torch.stack(windows, dim=1)  # (B, Q, L), each row increasing
    odd = torch.randint(questions, (batch,), device=clips.device)
    perm = shuffled_orders(length, batch, clips.device)
    rows = torch.arange(batch, device=clips.device)
    index[rows, odd] = torch.gather(index[rows, odd], 1, perm)
    frames = gather_frames(clips, index.flatten(1)).view(batch, questions, length, *clips.shape[2:])
    return frames, odd, index


class OddOneOut(Task):
    name = "odd_one_out"
    takes_clips = True

    def __init__(
        self,
        backbone: nn.Module,
        image_shape: tuple[int, int, int],
        *,
        questions: int = 4,
        length: int = 4,
        stride: int = 2,
        hidden_dim: int = 256,
        readout: str = "map",
    ) -> None:
        """`readout`: "map" (default) reads each frame's feature map through a MapReadout,
        "pooled" its pooled features (see MapReadout for why the map)."""
        super().__init__(backbone)
        if questions < 2:
            raise SelfSupError(f"odd_one_out needs at least 2 questions, got {questions}")
        self.questions, self.length, self.stride = questions, length, stride
        self.readout = make_readout(backbone, readout)
        dim = self.readout.dim if self.readout is not None else backbone.feature_dim
        self.embed = mlp(length * dim, hidden_dim, hidden_dim)
        self.score = mlp(2 * hidden_dim, hidden_dim, 1)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        clips = require_clips(batch, self.name)
        frames, odd, _ = odd_questions(clips, self.questions, self.length, self.stride)
        b, q = frames.shape[:2]
        features = read_frames(self, self.readout, frames.flatten(0, 1))  # (B*Q, L, D)
        embedded = self.embed(features.flatten(1)).view(b, q, -1)
        context = embedded.mean(1, keepdim=True).expand_as(embedded)
        logits = self.score(torch.cat([embedded, context], dim=2)).squeeze(2)
        accuracy = (logits.argmax(1) == odd).float().mean()
        return {"loss": F.cross_entropy(logits, odd), "accuracy": accuracy}

    @torch.no_grad()
    def show(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        # `images` are clips (N, T, C, H, W): the questions of 2 clips, one subsequence after
        # another; the odd (shuffled) one is framed in red.
        frames, odd, _ = odd_questions(images[:2], self.questions, self.length, self.stride)
        mask = torch.zeros(frames.shape[:3], dtype=torch.bool)
        mask[torch.arange(frames.shape[0]), odd.cpu()] = True
        return {
            f"Odd one out: {self.questions} subsequences of {self.length} frames per clip, "
            "the shuffled one in red": outline(frames.flatten(0, 2), mask.flatten())
        }
