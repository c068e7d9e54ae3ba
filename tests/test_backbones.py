"""Backbones: shapes, rebuild from config, stages, channels_last, gradients; save/load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from selfsup.backbones import BACKBONES, build_backbone, load_backbone, save_backbone
from selfsup.backbones.vit import default_patch_size
from selfsup.errors import SelfSupError

# Small settings keep every case well under a second on 2 CPU cores.
SMALL = {
    "small_cnn": {"width": 8},
    "resnet18": {"width": 0.25},
    "resnet50": {"width": 0.0625},
    "vit_tiny": {"dim": 48, "depth": 2, "heads": 3},
}
CASES = [(name, channels, size) for name in SMALL for channels in (1, 3) for size in (28, 32)]


def build(name: str, channels: int, size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone(name, in_channels=channels, image_size=size, **SMALL[name])


@pytest.mark.parametrize(("name", "channels", "size"), CASES)
def test_forward_rebuild_stages_and_gradients(name: str, channels: int, size: int) -> None:
    model = build(name, channels, size)
    x = torch.rand(4, channels, size, size)
    features = model(x)
    assert features.shape == (4, model.feature_dim)

    json.dumps(model.config)  # must be JSON-serialisable
    rebuilt = build_backbone(**model.config)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }

    staged = set()
    for stage in model.stages():
        staged |= {id(p) for p in stage.parameters()}
    assert staged == {id(p) for p in model.parameters()}, "stages() must cover every parameter"

    features.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_stages_in_order_reproduce_the_features(name: str) -> None:
    model = build(name, 3, 32).eval()
    x = torch.rand(2, 3, 32, 32)
    h = x
    for stage in model.stages():
        h = stage(h)
    pooled = h.mean(dim=(2, 3)) if h.ndim == 4 else h.mean(dim=1)
    assert torch.allclose(pooled, model(x), atol=1e-5)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_channels_last_matches_contiguous(name: str) -> None:
    model = build(name, 3, 32).eval()
    x = torch.rand(3, 3, 32, 32)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    got = model(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_defaults_and_options() -> None:
    assert set(BACKBONES) == {
        "small_cnn",
        "resnet18",
        "resnet50",
        "vit_tiny",
        "transformer",
        "word_vectors",
    }
    assert build_backbone("small_cnn").feature_dim == 256
    assert build_backbone("resnet18", width=0.25).config["stem"] == "cifar"
    big = build_backbone("resnet18", image_size=96, width=0.125)
    assert big.config["stem"] == "imagenet"
    assert big(torch.rand(2, 3, 96, 96)).shape == (2, 64)
    assert default_patch_size(32) == 4 and default_patch_size(28) == 4
    assert default_patch_size(224) == 16 and default_patch_size(96) == 16
    cls = build_backbone("vit_tiny", image_size=28, patch_size=7, depth=1, pool="cls")
    assert cls(torch.rand(2, 3, 28, 28)).shape == (2, 192)


def test_bad_names_and_options_are_clear() -> None:
    with pytest.raises(SelfSupError, match="choose one of: small_cnn"):
        build_backbone("resnet1000")
    with pytest.raises(SelfSupError, match="unknown option"):
        build_backbone("small_cnn", stem="cifar")
    with pytest.raises(SelfSupError, match="does not divide"):
        build_backbone("vit_tiny", image_size=28, patch_size=5)
    with pytest.raises(SelfSupError, match="stem"):
        build_backbone("resnet18", stem="tiny")
    with pytest.raises(SelfSupError, match="at least 8 px, got 4"):
        build_backbone("small_cnn", image_size=4)
    assert build_backbone("small_cnn", image_size=8)(torch.rand(2, 3, 8, 8)).shape == (2, 256)
    vit = build_backbone("vit_tiny", image_size=32, depth=1)
    with pytest.raises(SelfSupError, match="built for 32x32"):
        vit(torch.rand(1, 3, 28, 28))


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = build("small_cnn", 1, 28)
    model.train()
    model(torch.rand(8, 1, 28, 28))  # move BN running stats away from their init
    model = model.to(memory_format=torch.channels_last)
    folder = save_backbone(model, tmp_path / "run", extra={"task": "simclr"})
    description = json.loads((folder / "backbone.json").read_text())
    assert description["format"] == "selfsup-backbone/1"
    assert description["feature_dim"] == 64 and description["extra"] == {"task": "simclr"}
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]

    x = torch.rand(3, 1, 28, 28)
    expected = model.eval()(x)
    for where in (folder, folder / "backbone.json", folder / "backbone.safetensors"):
        loaded = load_backbone(where)
        assert not loaded.training
        assert torch.allclose(loaded(x), expected, atol=1e-5)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(SelfSupError, match="does not exist"):
        load_backbone(tmp_path / "missing")
    folder = save_backbone(build("small_cnn", 3, 32), tmp_path / "a")

    (folder / "backbone.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(SelfSupError, match="corrupt"):
        load_backbone(folder)

    save_backbone(build("small_cnn", 3, 32), folder)
    description = json.loads((folder / "backbone.json").read_text())
    description["config"]["width"] = 16
    (folder / "backbone.json").write_text(json.dumps(description))
    with pytest.raises(SelfSupError, match="does not match"):
        load_backbone(folder)

    (folder / "backbone.json").write_text("{ broken")
    with pytest.raises(SelfSupError, match="not valid JSON"):
        load_backbone(folder)

    (folder / "backbone.json").unlink()
    with pytest.raises(SelfSupError, match="no backbone.json"):
        load_backbone(folder)

    with pytest.raises(SelfSupError, match="config"):
        save_backbone(torch.nn.Linear(2, 2), tmp_path / "b")


def test_a_loaded_backbone_checks_its_input_and_prepare_images_makes_it(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from selfsup.backbones.export import prepare_images
    from selfsup.data.folder import load_image

    folder = save_backbone(build("small_cnn", 3, 16), tmp_path / "run" / "backbone")
    backbone = load_backbone(folder)
    assert backbone(torch.rand(2, 3, 16, 16)).shape == (2, backbone.feature_dim)
    with pytest.raises(SelfSupError, match="divide 0-255 pixels by 255"):
        backbone(torch.rand(2, 3, 16, 16) * 255)
    with pytest.raises(SelfSupError, match="3-channel 16x16 images, got 3-channel 130x100"):
        backbone(torch.rand(1, 3, 130, 100))
    with pytest.raises(SelfSupError, match="float batch"):
        backbone(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(SelfSupError, match=r"backbone is in .*run/backbone"):
        load_backbone(tmp_path / "run")

    pixels = np.random.default_rng(0).integers(0, 256, (100, 130, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    images = prepare_images([tmp_path / "photo.png"] * 2, backbone.config)
    assert images.shape == (2, 3, 16, 16) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(images[0], load_image(tmp_path / "photo.png", 16).float() / 255)
    assert backbone(images).shape == (2, backbone.feature_dim)
    from_tensor = prepare_images(torch.from_numpy(pixels).permute(2, 0, 1), backbone.config)
    assert from_tensor.shape == (1, 3, 16, 16)
    gray = prepare_images(torch.rand(4, 3, 20, 20), {"image_size": 8, "in_channels": 1})
    assert gray.shape == (4, 1, 8, 8)
    assert prepare_images(tmp_path / "photo.png", backbone).shape == (1, 3, 16, 16)
    with pytest.raises(SelfSupError, match=r"backbone's config.*backbone\.config"):
        prepare_images([tmp_path / "photo.png"], str(tmp_path / "run" / "backbone"))
    with pytest.raises(SelfSupError, match="got a PngImageFile.*torch.from_numpy"):
        prepare_images([Image.open(tmp_path / "photo.png")], backbone.config)
    with pytest.raises(SelfSupError, match="is a directory"):
        prepare_images(tmp_path, backbone.config)
    with pytest.raises(SelfSupError, match="is not found"):
        prepare_images([tmp_path / "missing.jpg"], backbone.config)
    with pytest.raises(SelfSupError, match="got a PngImageFile"):
        prepare_images(Image.open(tmp_path / "photo.png"), backbone.config)
    with pytest.raises(SelfSupError, match="torch.float64 but the backbone's weights are"):
        backbone(images.double())
    with pytest.raises(SelfSupError, match="1-channel") as wrong_channels:
        backbone(images[:, :1])
    assert "check_inputs" not in str(wrong_channels.value)  # no cure for other channels
