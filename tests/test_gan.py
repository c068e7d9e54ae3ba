"""DCGAN: both networks learn in one step, each only from its own loss; any size and channels."""

from __future__ import annotations

import copy

import pytest
import torch

from selfsup.backbones import build_backbone
from selfsup.data import load_images
from selfsup.errors import SelfSupError
from selfsup.recipe import Recipe
from selfsup.runs import pretrain_run, trained_task
from selfsup.tasks.gan import GAN, diff_augment, r1_penalty

pytestmark = pytest.mark.usefixtures("one_thread")


def make_task(shape=(1, 8, 8), **options) -> GAN:
    torch.manual_seed(0)
    backbone = build_backbone("small_cnn", shape[0], shape[1], width=8)
    return GAN(backbone, shape, **options)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_images("digits").images[:16].float() / 255


def nonzero(grad: torch.Tensor | None) -> bool:
    return grad is not None and bool(grad.abs().sum() > 0)


@pytest.mark.parametrize(
    "options",
    [
        {"loss": "hinge"},
        {"loss": "bce"},
        {"generator_objective": "feature_matching"},
        {"generator_objective": "feature_matching", "diff_augment": True},
        {"r1_weight": 1.0},
        {"critic_hidden": 32},
    ],
    ids=["hinge", "bce", "feature_matching", "diff_augment", "r1", "critic_hidden"],
)
def test_a_step_updates_both_generator_and_discriminator(digits, options):
    task = make_task(**options)
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-3)
    generator = [p.detach().clone() for p in task.generator.parameters()]
    critic = [p.detach().clone() for p in task.critic.parameters()]
    logs = task({"images": digits})
    assert set(logs) >= {"loss", "d_loss", "g_loss", "d_real", "d_fake"}
    assert torch.allclose(logs["loss"], logs["d_loss"] + logs["g_loss"])
    logs["loss"].backward()
    optimizer.step()
    changed = [
        not torch.equal(a, b) for a, b in zip(generator, task.generator.parameters(), strict=True)
    ]
    assert all(changed)
    changed = [not torch.equal(a, b) for a, b in zip(critic, task.critic.parameters(), strict=True)]
    assert all(changed)


@pytest.mark.parametrize("r1_weight", [0.0, 1.0])
@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("objective", ["adversarial", "feature_matching"])
def test_each_network_gets_gradient_only_from_its_own_loss(digits, objective, augment, r1_weight):
    task = make_task(generator_objective=objective, diff_augment=augment, r1_weight=r1_weight)
    logs = task({"images": digits})
    logs["g_loss"].backward(retain_graph=True)
    # The generator's loss must not push the discriminator towards calling fakes real.
    assert all(p.grad is None for p in task.critic.parameters())
    assert all(nonzero(p.grad) for p in task.generator.parameters())
    task.zero_grad(set_to_none=True)
    logs["d_loss"].backward()
    assert all(p.grad is None for p in task.generator.parameters())
    assert all(nonzero(p.grad) for p in task.critic.parameters())
    # The discriminator is the transferred backbone.
    assert task.critic.backbone is task.backbone


def test_backbone_running_stats_follow_real_images_only(digits):
    task = make_task()
    reference = copy.deepcopy(task.backbone)
    reference(digits)  # one forward pass on the real images only
    task({"images": digits})
    norms = [m for m in task.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    expected = [m for m in reference.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm, ref in zip(norms, expected, strict=True):
        assert torch.allclose(norm.running_mean, ref.running_mean)
        assert torch.allclose(norm.running_var, ref.running_var)
    assert norms[0].running_mean.abs().sum() > 0


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 24, 20)])
def test_generator_makes_images_of_the_data_shape(shape):
    task = make_task(shape)
    samples = task.generator(task.generator.noise(4))
    assert samples.shape == (4, *shape)
    assert samples.min() >= 0 and samples.max() <= 1


def test_a_training_step_on_3_channels(shared_data):
    images = load_images("cifar10:" + str(shared_data / "cifar10"), "test").images[:8] / 255
    task = make_task((3, 32, 32))
    logs = task({"images": images.float()})
    assert all(torch.isfinite(v) for v in logs.values())
    logs["loss"].backward()


def test_show_uses_fixed_noise(digits):
    task = make_task().eval()
    first, second = task.show(digits), task.show(digits)
    (grid,) = first.values()
    assert grid.shape == (32, 1, 8, 8)
    assert torch.equal(grid, next(iter(second.values())))


def test_pretrain_and_reload_through_the_engine(tmp_path):
    recipe = Recipe(
        task="gan",
        backbone="small_cnn",
        backbone_options={"width": 8},
        data="digits",
        train={"steps": 2, "batch_size": 16, "log_every": 1, "num_workers": 0},
    )
    summary = pretrain_run(recipe, tmp_path / "run", progress=False)
    assert summary["steps"] == 2
    task = trained_task(tmp_path / "run", (1, 8, 8))
    assert isinstance(task, GAN) and not task.training


def test_unknown_loss_is_reported():
    with pytest.raises(SelfSupError, match="hinge"):
        make_task(loss="wasserstein")
    with pytest.raises(SelfSupError, match="feature_matching"):
        make_task(generator_objective="minimax")


def test_feature_matching_is_the_gap_between_mean_real_and_fake_features(digits):
    task = make_task(generator_objective="feature_matching")
    torch.manual_seed(1)
    g_loss = task({"images": digits})["g_loss"]
    # The same fakes (same noise), by hand, with the critic as it was during the step.
    torch.manual_seed(1)
    fakes = task.generator(task.generator.noise(len(digits)))
    backbone = copy.deepcopy(task.backbone).train()  # batch statistics, as in the step
    with torch.no_grad():
        expected = (backbone(digits).mean(0) - backbone(fakes).mean(0)).pow(2).sum()
    assert torch.allclose(g_loss, expected, rtol=1e-4)


def test_diff_augment_shifts_and_cuts_out_and_passes_gradient_back():
    torch.manual_seed(0)
    images = torch.rand(64, 1, 16, 16, requires_grad=True)
    out = diff_augment(images)
    assert out.shape == images.shape
    # Cutout: every image loses a square of side 16 // 2 + 1 = 9 at most, 5 x 5 at least
    # (a corner centre); translation pads with zeros, so nothing new is added.
    zeros = (out.detach() == 0).flatten(1).sum(1)
    assert (zeros >= 25).all()
    assert not torch.equal(out.detach(), images.detach())
    out.sum().backward()  # the generator's gradient goes through the augmentation
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_r1_penalty_is_half_the_squared_gradient_norm_at_the_reals():
    torch.manual_seed(0)
    weights, images = torch.randn(1, 2, 3, 3), torch.rand(5, 2, 3, 3, requires_grad=True)
    linear = (images * weights).flatten(1).sum(1)
    scores = linear**2  # gradient 2 * linear * weights
    expected = 0.5 * ((2 * linear.detach()) ** 2 * weights.pow(2).sum()).mean()
    assert torch.allclose(r1_penalty(scores, images), expected)


def test_r1_weight_adds_the_penalty_to_the_critic_loss(digits):
    plain, penalised = make_task(), make_task(r1_weight=10.0)
    torch.manual_seed(2)
    plain_logs = plain({"images": digits})
    torch.manual_seed(2)
    logs = penalised({"images": digits})
    assert logs["r1"] > 0
    assert torch.allclose(logs["d_loss"], plain_logs["d_loss"] + 10.0 * logs["r1"])
    with pytest.raises(SelfSupError, match="r1_weight"):
        make_task(r1_weight=-1.0)


def test_lazy_r1_is_every_nth_step_and_that_many_times_heavier(digits):
    plain, lazy = make_task(), make_task(r1_weight=10.0, r1_every=3)
    penalised_steps = []
    for step in range(6):
        torch.manual_seed(step)
        plain_logs = plain({"images": digits, "step": torch.tensor(step)})
        torch.manual_seed(step)
        logs = lazy({"images": digits, "step": torch.tensor(step)})
        gap = logs["d_loss"] - plain_logs["d_loss"]
        if torch.allclose(gap, torch.zeros(())):
            continue
        assert torch.allclose(gap, 3 * 10.0 * logs["r1"])
        penalised_steps.append(step)
    assert penalised_steps == [0, 3]
    assert "r1" in logs  # logged on the steps in between too (the latest value)
    with pytest.raises(SelfSupError, match="r1_every"):
        make_task(r1_weight=1.0, r1_every=0)


def test_critic_hidden_puts_a_hidden_layer_between_the_features_and_the_score(digits):
    task = make_task(critic_hidden=32)
    linears = [m for m in task.critic.head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (task.backbone.feature_dim, 32),
        (32, 1),
    ]
    scores, features = task.critic(digits, with_features=True)
    assert scores.shape == (digits.shape[0],)
    assert features.shape == (digits.shape[0], task.backbone.feature_dim)
    # The critic's loss trains the backbone and both head layers, and never the generator.
    task({"images": digits})["d_loss"].backward()
    assert all(p.grad is None for p in task.generator.parameters())
    assert all(nonzero(p.grad) for p in task.backbone.parameters())
    assert all(nonzero(m.parametrizations.weight.original.grad) for m in linears)  # spectral
    with pytest.raises(SelfSupError, match="critic_hidden"):
        make_task(critic_hidden=-1)
