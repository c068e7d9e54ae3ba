"""Colorful Image Colorization.

Zhang, Isola, Efros, ECCV 2016. https://arxiv.org/abs/1603.08511

Free labels: every colour image is its own target. It is converted to CIE Lab; the network sees
only the lightness L and predicts the colour channels ab of every pixel. Naming the colour of a
thing from its shape and texture (grass is green, sky is blue) needs recognising the thing.

Loss "classification" (the paper's): ab is quantized on a grid of 10 into the bins sRGB can
reach; each pixel's target is soft-encoded over its 5 nearest bins (gaussian, sigma 5), and rare
colours are up-weighted (class rebalancing, lambda 0.5) so the network does not settle for the
desaturated brown that minimises the loss on average. Loss "regression": plain L2 on ab.

As in the paper, colour is predicted at a reduced resolution (`output_stride`, default 2: 16x16
for CIFAR; the paper uses 4) and the loss compares it with the area-averaged ab there: colour
varies slowly, and a distribution over ~260 bins at every pixel is most of the step's cost. Shown
colorizations upsample the predicted ab bilinearly and keep the full-resolution L.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.augment import light_augment
from selfsup.backbones import feature_map
from selfsup.color import gamut_ab_bins, lab_to_rgb, rgb_to_lab
from selfsup.errors import SelfSupError
from selfsup.tasks.base import Batch, Task, require_positive

LOSSES = ("classification", "regression")
AB_SCALE = 100.0  # regression predicts ab / 100, values of order 1
GRAY_AB = 1.0  # |a|, |b| below this everywhere: gray pixels (rounding leaves ~1e-4)


def upsampling_head(in_channels: int, out_channels: int, doublings: int, width: int = 64):
    """1x1 reduction, then `doublings` x (bilinear x2, conv3x3-BN-ReLU), then a 1x1 classifier.

    Channels halve (down to 16) as resolution doubles, so every level costs about the same and
    the full-resolution layers stay cheap next to the backbone.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, width, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    ]
    channels = width
    for _ in range(doublings):
        following = max(channels // 2, 16)
        layers += [
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(channels, following, 3, padding=1, bias=False),
            nn.BatchNorm2d(following),
            nn.ReLU(inplace=True),
        ]
        channels = following
    layers.append(nn.Conv2d(channels, out_channels, 1))
    return nn.Sequential(*layers)


def soft_encode(
    ab: torch.Tensor, bins: torch.Tensor, neighbors: int = 5, sigma: float = 5.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft targets of ab values (N, 2) over the bins (Q, 2): indices (N, k), weights (N, k).

    The weights are a gaussian of the distance to each of the k nearest bins, summing to 1;
    the nearest bin comes first.
    """
    distances = torch.cdist(ab, bins)
    nearest, indices = distances.topk(neighbors, dim=1, largest=False)
    weights = torch.softmax(-nearest.square() / (2 * sigma**2), dim=1)
    return indices, weights


def smooth_distribution(
    distribution: torch.Tensor, bins: torch.Tensor, sigma: float = 5.0
) -> torch.Tensor:
    """The bin distribution blurred by a gaussian in ab space (the paper's p~), still summing
    to 1: each bin spreads its mass over its neighbours."""
    kernel = torch.exp(-torch.cdist(bins, bins).square() / (2 * sigma**2))
    return distribution @ (kernel / kernel.sum(1, keepdim=True))


def rebalance_weights(distribution: torch.Tensor, mix: float = 0.5) -> torch.Tensor:
    """Class weights w ~ 1 / ((1 - mix) p + mix / Q), scaled so that sum(p * w) = 1.

    Mean 1 under p keeps the loss on the same scale as the unweighted one.
    """
    weights = 1 / ((1 - mix) * distribution + mix / distribution.numel())
    return weights / (distribution * weights).sum()


class Colorization(Task):
    name = "colorization"

    def __init__(
        self,
        backbone: nn.Module,
        image_shape: tuple[int, int, int],
        *,
        loss: str = "classification",
        grid: float = 10.0,
        neighbors: int = 5,
        sigma: float = 5.0,
        rebalance: float = 0.5,
        temperature: float = 0.38,
        prior_rate: float = 0.001,
        head_width: int = 64,
        output_stride: int = 2,
        augment: bool = True,
    ) -> None:
        super().__init__(backbone)
        require_positive(self.name, temperature=temperature)
        channels, height, width = image_shape
        if channels != 3:
            raise SelfSupError(
                f"colorization needs colour images (3 channels); the data has {channels}; "
                "use colour data, e.g. cifar10:DIR or folder:DIR of colour images"
            )
        if loss not in LOSSES:
            raise SelfSupError(f"unknown colorization loss {loss!r}; choose one of: {LOSSES}")
        self.loss_kind, self.neighbors, self.sigma = loss, neighbors, sigma
        self.rebalance, self.temperature, self.augment = rebalance, temperature, augment
        self.prior_rate = prior_rate
        self._colour_seen = False  # checked on the first batch (_check_colour)
        # Derived from `grid`, so it needs no saving; the prior below is learnt and is saved.
        self.register_buffer("bins", gamut_ab_bins(grid), persistent=False)
        num_bins = self.bins.shape[0]
        # Running colour distribution of the training pixels: a mean over the first
        # 1 / prior_rate batches, then an exponential average. A buffer, so it is in the
        # checkpoint and a resumed run weights its loss exactly as before.
        self.register_buffer("prior", torch.full((num_bins,), 1 / num_bins))
        self.register_buffer("prior_batches", torch.zeros((), dtype=torch.long))

        training = backbone.training
        backbone.eval()  # the probe below must not touch BatchNorm statistics
        with torch.no_grad():
            probe = feature_map(backbone, torch.zeros(1, 3, height, width))
        backbone.train(training)
        doublings = max(0, round(math.log2(height / output_stride / probe.shape[-2])))
        outputs = num_bins if loss == "classification" else 2
        self.head = upsampling_head(probe.shape[1], outputs, doublings, head_width)

    def backbone_input(self, lightness: torch.Tensor) -> torch.Tensor:
        """L (B, 1, H, W) in [0, 100] as a gray RGB image (B, 3, H, W) in [0, 1].

        The backbone is transferred to whole colour images of the dataset, so it must keep its
        3-channel input: a gray image (R = G = B) is a colour image the backbone will meet, and
        L / 100 is close to the sRGB gray value of the same lightness (both curves are ~gamma).
        """
        return (lightness / 100).expand(-1, 3, -1, -1)

    def _logits(self, lightness: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode_map(self.backbone_input(lightness)))

    @torch.no_grad()
    def _update_prior(self, nearest: torch.Tensor) -> None:
        counts = torch.bincount(nearest, minlength=self.prior.numel()).float()
        # A tensor, not a float: reading the counter would stall a GPU every step.
        rate = (1 / (self.prior_batches + 1)).clamp(min=self.prior_rate)
        self.prior.lerp_(counts / counts.sum(), rate)
        self.prior_batches += 1

    def class_weights(self) -> torch.Tensor:
        """Per-bin loss weights (Q,) from the running colour distribution."""
        distribution = smooth_distribution(self.prior, self.bins, self.sigma)
        return rebalance_weights(distribution, self.rebalance)

    def _check_colour(self, ab: torch.Tensor) -> None:
        """Refuse gray images stored as RGB (a folder of scans): their ab targets are all zero,
        so the task would train without anything to learn. One batch with colour is enough."""
        if float(ab.abs().amax()) < GRAY_AB:
            raise SelfSupError(
                "colorization: every pixel of the first batch is gray, so there is no colour "
                "to predict; the images are grayscale (stored as RGB): use colour images, or a "
                "task for gray ones (rotation, simclr, ...)"
            )
        self._colour_seen = True

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = batch["images"]
        if self.augment:
            images = light_augment(images)
        with torch.autocast(images.device.type, enabled=False):
            lab = rgb_to_lab(images)
        lightness, ab = lab[:, :1], lab[:, 1:]
        if not self._colour_seen:
            self._check_colour(ab)
        out = self._logits(lightness)
        ab = F.adaptive_avg_pool2d(ab, out.shape[-2:])  # the colour at the head's resolution
        if self.loss_kind == "regression":
            return {"loss": F.mse_loss(out.float(), ab / AB_SCALE)}

        # Targets per pixel, pixels flattened: (B*H*W, 2) against the (Q, 2) bins.
        with torch.no_grad(), torch.autocast(images.device.type, enabled=False):
            indices, weights = soft_encode(
                ab.permute(0, 2, 3, 1).reshape(-1, 2), self.bins, self.neighbors, self.sigma
            )
            if self.training:
                self._update_prior(indices[:, 0])
            pixel_weights = self.class_weights()[indices[:, 0]]
        log_probs = (
            F.log_softmax(out.float(), dim=1).permute(0, 2, 3, 1).reshape(indices.shape[0], -1)
        )
        cross_entropy = -(log_probs.gather(1, indices) * weights).sum(1)
        accuracy = (log_probs.argmax(1) == indices[:, 0]).float().mean()
        return {"loss": (pixel_weights * cross_entropy).mean(), "bin_accuracy": accuracy}

    @torch.no_grad()
    def predict_ab(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted ab (B, 2, H, W) of RGB images, from their lightness alone.

        Classification uses the paper's annealed mean: the bin distribution sharpened by the
        temperature (0.38), then averaged; the mode alone gives patchy colours, the plain mean
        washed-out ones.
        """
        out = self._logits(rgb_to_lab(images)[:, :1]).float()
        if self.loss_kind == "regression":
            ab = out * AB_SCALE
        else:
            probs = torch.softmax(out / self.temperature, dim=1)
            ab = torch.einsum("bqhw,qc->bchw", probs, self.bins)
        return F.interpolate(ab, size=images.shape[-2:], mode="bilinear", align_corners=False)

    @torch.no_grad()
    def show(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        images = images[:8]
        lightness = rgb_to_lab(images)[:, :1]
        colorized = lab_to_rgb(torch.cat([lightness, self.predict_ab(images)], dim=1))
        # Rows of the 8-column grid: gray input, colorization, original; one image per column.
        grid = torch.cat([self.backbone_input(lightness), colorized, images])
        return {"Colorization: gray input (top), prediction (middle), original (bottom)": grid}
