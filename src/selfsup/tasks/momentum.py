"""The momentum (EMA) encoder shared by MoCo (He et al. 2020) and BYOL (Grill et al. 2020).

A frozen copy of online modules whose weights follow them as an exponential moving average:
    target <- m * target + (1 - m) * online     (after every optimizer step)
It is a submodule of its task, so it lands in task.state_dict() and survives checkpoint + resume.
Its BatchNorm buffers are its own: it always runs in training mode (batch statistics), as in the
official MoCo code, so its running statistics are never used.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class MomentumEncoder(nn.Module):
    """A gradient-free EMA copy of the given online modules, applied in sequence."""

    def __init__(self, *online: nn.Module) -> None:
        super().__init__()
        self.net = nn.Sequential(*(copy.deepcopy(module) for module in online))
        self.net.requires_grad_(False)  # also keeps it out of the optimizer (param_groups)

    def forward(self, images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """The target's output for `images`; pass the task's `channels_last` (see Task.encode)."""
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():  # the stop-gradient: no graph is ever built through the target
            return self.net(images)

    @torch.no_grad()
    def update(self, momentum: float, *online: nn.Module) -> None:
        """target <- momentum * target + (1 - momentum) * online, parameter by parameter."""
        target = list(self.net.parameters())
        source = [p for module in online for p in module.parameters()]
        if len(target) != len(source):
            raise ValueError(
                f"the momentum encoder has {len(target)} parameters, the online modules "
                f"{len(source)}; pass the same modules it was built from"
            )
        for t, s in zip(target, source, strict=True):
            t.lerp_(s.detach().to(t.dtype), 1.0 - momentum)


def cosine_momentum(base: float, step: int, total_steps: int) -> float:
    """BYOL's schedule 1 - (1 - base) (cos(pi step / total) + 1) / 2: base at 0, 1 at the end."""
    progress = min(1.0, step / max(1, total_steps))
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0
