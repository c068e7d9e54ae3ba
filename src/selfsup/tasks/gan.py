"""DCGAN: Unsupervised Representation Learning with Deep Convolutional GANs.

Radford, Metz, Chintala, ICLR 2016. https://arxiv.org/abs/1511.06434

Free labels: "real" for the data, "fake" for a generator's samples. The discriminator is the
backbone plus a linear real/fake head, and its features are the representation (the paper
transfers the discriminator's conv features). Both networks update in every step under the
engine's ONE optimizer: the discriminator loss sees detached fakes, and the generator loss goes
through the discriminator with detached parameters, so neither loss trains the other network.

Stability: DCGAN's Adam beta1 = 0.5 is the recipe's `momentum: 0.5` (one AdamW serves both
networks); the hinge loss (Lim & Ye 2017) by default, which stops pushing the critic once a
sample is past the margin, and spectral norm (Miyato et al. 2018) on the critic's head, which
bounds its slope.
The backbone's BatchNorm running statistics are updated from real images only, since that is
what the backbone is evaluated on.

`generator_objective: feature_matching` (Salimans et al., "Improved Techniques for Training
GANs", NeurIPS 2016, https://arxiv.org/abs/1606.03498): the generator matches the batch mean of
the discriminator's features on real images instead of fooling its score; the paper's
semi-supervised results come from this objective. Measured here on a CPU budget, it lifts the
GAN's features, but not above a random network's (docs/results_extra.md).

`diff_augment: true` (Zhao et al., "Differentiable Augmentation for Data-Efficient GAN
Training", NeurIPS 2020, https://arxiv.org/abs/2006.10738): the critic sees reals and fakes only
through the same random translation (1/8 of the side) and cutout (a square of half the side),
differentiable so the generator still gets its gradient. It takes away pixel-exact cues, such as
upsampling stripes, by which a critic tells fakes apart without learning what objects look like.

`r1_weight` > 0 (Mescheder, Geiger, Nowozin, "Which Training Methods for GANs do actually
Converge?", ICML 2018, https://arxiv.org/abs/1801.04406): the critic also pays gamma/2 times the
squared norm of its gradient at real images. Spectral norm on the head alone does not stop the
backbone (BatchNorm included) from growing steep enough to win outright within a few hundred
steps; the penalty does. `r1_every: N` is StyleGAN2's lazy regularisation (Karras et al.,
"Analyzing and Improving the Image Quality of StyleGAN", CVPR 2020,
https://arxiv.org/abs/1912.04958): the penalty, N times heavier, only every N-th step, since
its double backward pass costs about as much as the rest of the step.
"""

from __future__ import annotations

import torch
from torch import nn

from selfsup.augment.ops import random_translate
from selfsup.errors import SelfSupError
from selfsup.tasks.base import Batch, Task
from selfsup.tasks.generative import (
    Critic,
    Generator,
    box_mask,
    check_adversarial_loss,
    discriminator_loss,
    frozen_norm_stats,
    generator_loss,
    score_with_frozen_critic,
)

SHOW_SEED = 0


def r1_penalty(real_scores: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """Half the mean squared norm of the critic's gradient at the real images (Mescheder et al.
    2018); differentiable, so the critic learns to be flat around the data."""
    (grad,) = torch.autograd.grad(real_scores.sum(), real_images, create_graph=True)
    return 0.5 * grad.pow(2).flatten(1).sum(1).mean()


def cutout(images: torch.Tensor, size: int) -> torch.Tensor:
    """Zero one size x size square per image, centred anywhere (clipped at the borders)."""
    b, _, height, width = images.shape
    centre_y = torch.randint(0, height, (b,), device=images.device)
    centre_x = torch.randint(0, width, (b,), device=images.device)
    side = 2 * (size // 2) + 1  # odd, so the square is centred on its pixel
    hidden = box_mask(centre_y - size // 2, centre_x - size // 2, side, side, height, width)
    return images * (1 - hidden).to(images.dtype)


def diff_augment(images: torch.Tensor) -> torch.Tensor:
    """DiffAugment's translation + cutout policy; differentiable in `images`."""
    side = min(images.shape[-2:])
    return cutout(random_translate(images, max(1, side // 8)), max(1, side // 2))


class GAN(Task):
    name = "gan"

    def __init__(
        self,
        backbone: nn.Module,
        image_shape: tuple[int, int, int],
        *,
        noise_dim: int = 100,
        generator_width: int = 16,
        loss: str = "hinge",
        spectral_norm: bool = True,
        generator_objective: str = "adversarial",
        diff_augment: bool = False,
        r1_weight: float = 0.0,
        critic_hidden: int = 0,
        r1_every: int = 1,
    ) -> None:
        """`loss`: the adversarial loss, "hinge" or "bce"; `generator_objective`: "adversarial"
        (the generator minimises that loss on the critic's scores) or "feature_matching";
        `r1_weight`: gamma of the R1 gradient penalty on real images (0 = off), applied every
        `r1_every` steps (lazily, see the module docstring);
        `critic_hidden`: width of a hidden layer in the critic's head (0 = a linear head; see
        Critic)."""
        super().__init__(backbone)
        check_adversarial_loss(loss)
        if r1_weight < 0:
            raise SelfSupError(f"r1_weight must be >= 0, got {r1_weight}")
        if r1_every < 1:
            raise SelfSupError(f"r1_every must be >= 1 step, got {r1_every}")
        if critic_hidden < 0:
            raise SelfSupError(f"critic_hidden must be >= 0, got {critic_hidden}")
        self.r1_weight, self.r1_every = float(r1_weight), int(r1_every)
        self.last_r1 = torch.tensor(0.0)
        if generator_objective not in ("adversarial", "feature_matching"):
            raise SelfSupError(
                f"unknown generator_objective {generator_objective!r}; use 'adversarial' or "
                "'feature_matching'"
            )
        self.loss, self.generator_objective = loss, generator_objective
        self.augment = diff_augment
        self.generator = Generator(noise_dim, image_shape, generator_width)
        self.critic = Critic(backbone, spectral=spectral_norm, hidden=critic_hidden)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        real_images = batch["images"]
        self.critic.channels_last = self.channels_last
        # The engine's step, so that a resumed run penalises the same steps as an unbroken one.
        penalise = self.r1_weight > 0 and int(batch.get("step", 0)) % self.r1_every == 0
        fakes = self.generator(self.generator.noise(real_images.shape[0]))
        if self.augment:
            real_images, fakes = diff_augment(real_images), diff_augment(fakes)
        if penalise:
            real_images = real_images.detach().requires_grad_(True)
        real, real_features = self.critic(real_images, with_features=True)
        with frozen_norm_stats(self.critic):
            fake = self.critic(fakes.detach())
        d_loss = discriminator_loss(self.loss, real, fake)
        logs = {}
        if penalise:
            r1 = r1_penalty(real, real_images)
            d_loss = d_loss + self.r1_every * self.r1_weight * r1
            self.last_r1 = r1.detach()
        if self.r1_weight:
            logs["r1"] = self.last_r1  # the latest measured penalty, on lazy steps too
        if self.generator_objective == "feature_matching":
            _, fake_features = score_with_frozen_critic(self.critic, fakes, with_features=True)
            gap = real_features.detach().mean(0) - fake_features.mean(0)
            g_loss = gap.pow(2).sum()
        else:
            g_loss = generator_loss(self.loss, score_with_frozen_critic(self.critic, fakes))
        return {
            "loss": d_loss + g_loss,
            "d_loss": d_loss,
            "g_loss": g_loss,
            "d_real": real.mean(),
            "d_fake": fake.mean(),
            **logs,
        }

    @torch.no_grad()
    def show(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        # Fixed noise: the same 32 latent points in every report.
        noise = self.generator.noise(32, torch.Generator().manual_seed(SHOW_SEED))
        samples = self.generator(noise)
        return {"DCGAN: generated samples (fixed noise)": samples}
