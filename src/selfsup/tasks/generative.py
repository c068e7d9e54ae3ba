"""Pieces shared by the generative pretext tasks (inpainting, autoencoder, GAN).

An image decoder (feature vector -> image, also the DCGAN generator), a DCGAN-style critic
(a backbone + a linear real/fake head), the adversarial losses, the "score with frozen critic"
call that lets two adversaries train under ONE optimizer, and the masking helper.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.utils.parametrizations import spectral_norm

from selfsup.errors import SelfSupError

ADVERSARIAL_LOSSES = ("hinge", "bce")
MAX_UPSAMPLINGS = 3


def _upsampling_plan(height: int, width: int) -> tuple[int, int, int]:
    """(base height, base width, 2x upsamplings): halve while even and >= 8, at most 3 times.

    32 px starts at 4x4 (3 steps), 28 px at 7x7 (2 steps), 8 px at 4x4 (1 step). Sizes that do
    not halve cleanly start at ceil(size / 8) and are resized to the exact size at the end.
    """
    h, w, steps = height, width, 0
    while steps < MAX_UPSAMPLINGS and h % 2 == 0 and w % 2 == 0 and min(h, w) >= 8:
        h, w, steps = h // 2, w // 2, steps + 1
    if max(h, w) > 8:
        scale = 2**MAX_UPSAMPLINGS
        return math.ceil(height / scale), math.ceil(width / scale), MAX_UPSAMPLINGS
    return h, w, steps


class ImageDecoder(nn.Module):
    """A vector (B, in_dim) -> image (B, C, H, W) in [0, 1].

    A linear layer to a small feature map, then (nearest 2x upsample -> conv3x3 -> BN -> ReLU)
    blocks that halve the width, then a conv3x3 to C channels and a sigmoid. Upsample + conv
    instead of DCGAN's transposed convolutions avoids their checkerboard artefacts.
    """

    def __init__(self, in_dim: int, image_shape: tuple[int, int, int], width: int = 32) -> None:
        super().__init__()
        channels, height, image_width = image_shape
        base_h, base_w, steps = _upsampling_plan(height, image_width)
        self.image_shape = (channels, height, image_width)
        self.base = (width * 2**steps, base_h, base_w)
        self.project = nn.Sequential(
            nn.Linear(in_dim, math.prod(self.base), bias=False),
            nn.BatchNorm1d(math.prod(self.base)),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        current = self.base[0]
        for _ in range(steps):
            blocks += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(current, current // 2, 3, padding=1, bias=False),
                nn.BatchNorm2d(current // 2),
                nn.ReLU(inplace=True),
            ]
            current //= 2
        blocks.append(nn.Conv2d(current, channels, 3, padding=1))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.project(code).view(-1, *self.base))
        if x.shape[-2:] != self.image_shape[1:]:
            x = F.interpolate(x, size=self.image_shape[1:], mode="bilinear", align_corners=False)
        return torch.sigmoid(x)


class Generator(ImageDecoder):
    """The DCGAN generator: the image decoder fed gaussian noise z ~ N(0, I)."""

    def __init__(self, noise_dim: int, image_shape: tuple[int, int, int], width: int = 32) -> None:
        super().__init__(noise_dim, image_shape, width)
        self.noise_dim = noise_dim

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = self.project[0].weight.device
        if generator is None:
            return torch.randn(n, self.noise_dim, device=device)
        # Drawn on the CPU so a seeded generator gives the same noise on every device.
        return torch.randn(n, self.noise_dim, generator=generator).to(device)


class Critic(nn.Module):
    """DCGAN-style discriminator: a backbone's pooled features -> one real/fake score per image.

    Spectral norm on the head bounds how steep the final score can get, which keeps a critic
    that trains at the same learning rate as its generator from saturating early. The backbone
    is left unnormalised because it is what gets transferred.
    """

    def __init__(self, backbone: nn.Module, spectral: bool = True, hidden: int = 0) -> None:
        """`hidden` > 0: one hidden layer of that width (LeakyReLU 0.2, as in DCGAN's critic)
        between the features and the score, so that the transferred features are not the
        critic's last layer. The layer next to a pretext head specialises in the pretext (Chen
        et al. 2020 found it for SimCLR's projection head); Radford et al. read lower layers."""
        super().__init__()
        self.backbone = backbone

        def linear(n_in: int, n_out: int) -> nn.Module:
            layer = nn.Linear(n_in, n_out)
            return spectral_norm(layer) if spectral else layer

        dim = backbone.feature_dim
        if hidden:
            self.head = nn.Sequential(linear(dim, hidden), nn.LeakyReLU(0.2), linear(hidden, 1))
        else:
            self.head = linear(dim, 1)
        self.channels_last = False

    def forward(
        self, images: torch.Tensor, with_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Scores (B,), or (scores, the backbone's pooled features) with `with_features`."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        features = self.backbone(images)
        scores = self.head(features).squeeze(1)
        return (scores, features) if with_features else scores


@contextlib.contextmanager
def frozen_norm_stats(module: nn.Module) -> Iterator[None]:
    """BatchNorm still normalises with batch statistics but does not update its running ones.

    Used for fake images, so the running statistics (used when the backbone is evaluated)
    describe real images only.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum


def score_with_frozen_critic(critic: nn.Module, images: torch.Tensor, **kwargs):
    """The critic's output (kwargs go to its forward) with its parameters detached: gradient
    reaches only `images`.

    This is how a generator loss and a discriminator loss share ONE optimizer: the generator's
    loss cannot move the critic towards the generator's objective.
    """
    params = {name: p.detach() for name, p in critic.named_parameters()}
    with frozen_norm_stats(critic):
        return functional_call(critic, params, (images,), kwargs)


def discriminator_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Critic loss on real and (detached) fake scores: hinge (Lim & Ye 2017) or the GAN BCE."""
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def generator_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """Generator loss on the frozen critic's scores of fakes (non-saturating for BCE)."""
    if kind == "hinge":
        return -fake.mean()
    return F.softplus(-fake).mean()


def check_adversarial_loss(kind: str) -> None:
    if kind not in ADVERSARIAL_LOSSES:
        raise SelfSupError(
            f"unknown adversarial loss {kind!r}; choose one of: {', '.join(ADVERSARIAL_LOSSES)}"
        )


def box_mask(
    top: torch.Tensor, left: torch.Tensor, box_height: int, box_width: int, height: int, width: int
) -> torch.Tensor:
    """(n, 1, H, W) float mask, 1 = inside image i's box of box_height x box_width pixels whose
    top-left corner is (top[i], left[i]); a box reaching past the border is clipped."""
    top, left = top.view(-1, 1, 1, 1), left.view(-1, 1, 1, 1)
    rows = torch.arange(height, device=top.device).view(1, 1, height, 1)
    cols = torch.arange(width, device=top.device).view(1, 1, 1, width)
    inside = (rows >= top) & (rows < top + box_height) & (cols >= left) & (cols < left + box_width)
    return inside.float()


def hide(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Replace the masked pixels (mask (B, 1, H, W), 1 = hidden) by the visible mean.

    Pathak et al. fill the hole with the mean pixel value; the mean of each image's visible
    pixels (per channel) carries nothing of the hidden values.
    """
    visible = 1 - mask
    mean = (images * visible).sum((2, 3), keepdim=True) / visible.sum((2, 3), keepdim=True).clamp(
        min=1
    )
    return images * visible + mean * mask


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the masked pixels only (mask (B, 1, H, W), 1 = counted)."""
    weight = mask.expand_as(target)
    return ((prediction - target) ** 2 * weight).sum() / weight.sum().clamp(min=1)


def picture_rows(*batches: torch.Tensor, n: int = 8) -> torch.Tensor:
    """The first n images of each batch, one batch per row of the report's 8-column grid."""
    return torch.cat([batch[:n] for batch in batches])
