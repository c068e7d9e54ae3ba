"""Save and load a backbone as safetensors weights + a JSON description (never pickle), and
prepare images the way a loaded image backbone was trained on them."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from selfsup.errors import SelfSupError

FORMAT = "selfsup-backbone/1"
WEIGHTS = "backbone.safetensors"
DESCRIPTION = "backbone.json"


def _atomic_write(target: Path, write: Any) -> None:
    """Write via a temporary file in the same folder so a crash never leaves half a file."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def save_backbone(
    backbone: nn.Module, path: str | Path, extra: dict[str, Any] | None = None
) -> Path:
    """Write `<path>/backbone.safetensors` and `<path>/backbone.json`; return the folder.

    `extra` is JSON-serialisable metadata stored beside the config (e.g. the task that trained
    it). The backbone needs the `config` and `feature_dim` attributes every selfsup backbone has.
    """
    config = getattr(backbone, "config", None)
    if not isinstance(config, dict):
        raise SelfSupError(
            f"{type(backbone).__name__} has no `config` dict; only backbones made by "
            "selfsup.backbones.build_backbone can be saved"
        )
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    # safetensors wants contiguous, unshared tensors; channels_last weights are not contiguous.
    weights = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    description = {
        "format": FORMAT,
        "config": config,
        "feature_dim": int(backbone.feature_dim),
        **({"extra": extra} if extra else {}),
    }
    text = json.dumps(description, indent=2)
    _atomic_write(folder / WEIGHTS, lambda tmp: save_file(weights, str(tmp), {"format": FORMAT}))
    _atomic_write(folder / DESCRIPTION, lambda tmp: tmp.write_text(text + "\n"))
    return folder


def read_description(path: str | Path) -> dict[str, Any]:
    """The parsed backbone.json of a saved backbone (folder or either file)."""
    folder = _folder(path)
    file = folder / DESCRIPTION
    if not file.is_file() and (folder / "backbone" / DESCRIPTION).is_file():
        raise SelfSupError(
            f"{folder} is a run directory; its backbone is in {folder / 'backbone'}: "
            f"load_backbone('{folder / 'backbone'}')"
        )
    if not file.is_file():
        raise SelfSupError(f"no {DESCRIPTION} in {folder}; point to a folder made by save_backbone")
    try:
        description = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SelfSupError(f"{file} is not valid JSON ({error}); {_save_again(folder)}") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise SelfSupError(f"{file} is not a {FORMAT} description; {_save_again(folder)}")
    return description


class InputCheck:
    """A forward pre-hook that refuses what an image backbone was not trained on: anything but
    a float (B, C, H, W) batch of its channels and size, or values clearly outside [0, 1]
    (0-255 pixels). A class, not a closure, so a model holding it still pickles."""

    def __init__(self, channels: int, size: int) -> None:
        self.channels, self.size = channels, size

    def __call__(self, module: nn.Module, args: tuple) -> None:
        x = args[0] if args else None
        c, s = self.channels, self.size
        fix = "selfsup.prepare_images(images, backbone.config) makes them from files or tensors"
        if not (isinstance(x, torch.Tensor) and x.dim() == 4 and x.is_floating_point()):
            got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise SelfSupError(
                f"the backbone takes a float batch (B, {c}, {s}, {s}) in [0, 1], got {got}; {fix}"
            )
        if x.shape[1] != c or tuple(x.shape[-2:]) != (s, s):
            # Only the size can be lifted: a CNN runs on other sizes, not on other channels.
            other_size = "" if x.shape[1] != c else " (a CNN takes other sizes: check_inputs=False)"
            raise SelfSupError(
                f"the backbone was trained on {c}-channel {s}x{s} images, got {x.shape[1]}-channel "
                f"{x.shape[2]}x{x.shape[3]}; {fix}{other_size}"
            )
        weight = next(module.parameters(), None)
        if weight is not None and x.dtype != weight.dtype:
            raise SelfSupError(
                f"the batch is {x.dtype} but the backbone's weights are {weight.dtype}; convert "
                f"one to the other (images.to({weight.dtype}) or backbone.to(images.dtype))"
            )
        if x.numel():
            low, high = (float(v) for v in torch.aminmax(x.detach()))
            if high > 1.5 or low < -0.5:
                raise SelfSupError(
                    f"image values run from {low:.3g} to {high:.3g} but the backbone takes [0, 1]: "
                    "divide 0-255 pixels by 255 (and do not normalise them); prepare_images does it"
                )


def prepare_images(
    images: torch.Tensor | str | Path | Iterable[str | Path], config: dict[str, Any]
) -> torch.Tensor:
    """Images as a backbone with `config` (its .config) was trained on them: a float batch
    (N, C, S, S) in [0, 1], S = config["image_size"], C = config["in_channels"].

    `images` is an image file, a list of them (decoded as an image folder is for training:
    RGB, centre square crop, resize) or a tensor (N, C, H, W) or (C, H, W) of uint8 pixels or
    floats in [0, 1] (centre square crop and antialiased resize, as in-memory data sets get).
    Gray and RGB are converted to the channels the backbone takes.
    """
    from selfsup.data.base import convert_channels
    from selfsup.data.folder import load_image
    from selfsup.data.spec import resize_images

    if isinstance(config, nn.Module):
        config = getattr(config, "config", None)  # the loaded backbone itself
    if not (isinstance(config, dict) and {"image_size", "in_channels"} <= config.keys()):
        raise SelfSupError(
            "prepare_images needs the backbone's config as its second argument: "
            "prepare_images(images, backbone.config) with backbone = load_backbone(...)"
        )
    size, channels = int(config["image_size"]), int(config["in_channels"])
    if isinstance(images, torch.Tensor):
        batch = images.unsqueeze(0) if images.dim() == 3 else images
        if batch.dim() != 4 or batch.shape[1] not in (1, 3):
            raise SelfSupError(
                f"prepare_images takes (N, C, H, W) or (C, H, W) images with 1 or 3 channels, "
                f"got {tuple(images.shape)}"
            )
        if batch.is_floating_point():
            if batch.numel() and (float(batch.max()) > 1.5 or float(batch.min()) < -0.5):
                raise SelfSupError(
                    "prepare_images takes float images in [0, 1] or uint8 0-255; divide 0-255 "
                    "floats by 255 or pass them as uint8"
                )
            batch = (batch.clamp(0, 1) * 255).round().to(torch.uint8)
        elif batch.dtype != torch.uint8:
            raise SelfSupError(f"prepare_images takes uint8 or float images, got {batch.dtype}")
        height, width = batch.shape[-2:]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        batch = resize_images(batch[..., top : top + side, left : left + side], size)
    else:
        if not isinstance(images, (str, Path, Iterable)):
            raise SelfSupError(
                f"prepare_images takes image file paths or a tensor, got a "
                f"{type(images).__name__}; for an image in memory pass "
                "torch.from_numpy(np.asarray(image)).permute(2, 0, 1)[None] (uint8 RGB)"
            )
        files = [images] if isinstance(images, (str, Path)) else list(images)
        if not files:
            raise SelfSupError("prepare_images got no images")
        for f in files:
            if not isinstance(f, (str, Path)):
                raise SelfSupError(
                    f"prepare_images takes image file paths or a tensor, got a "
                    f"{type(f).__name__}; for an image in memory pass "
                    "torch.from_numpy(np.asarray(image)).permute(2, 0, 1)[None] (uint8 RGB)"
                )
            if not Path(f).is_file():
                what = "a directory" if Path(f).is_dir() else "not found"
                raise SelfSupError(f"prepare_images: {f} is {what}; give image file paths")
        batch = torch.stack([load_image(Path(f), size) for f in files])
    return convert_channels(batch, channels).float() / 255


def load_backbone(path: str | Path, *, check_inputs: bool = True) -> nn.Module:
    """Rebuild a saved backbone from its folder (or either of its files), in eval mode.

    An image backbone then checks each batch it is given (InputCheck): float (B, C, S, S) of
    the channels and size it was trained on, values in [0, 1]; prepare_images makes such
    batches. `check_inputs=False` skips that (callers that prepare their own batches).
    """
    from selfsup.backbones import build_backbone  # the registry imports this module

    description = read_description(path)
    folder = _folder(path)
    weights_file = folder / WEIGHTS
    if not weights_file.is_file():
        raise SelfSupError(
            f"no {WEIGHTS} in {folder}; the save was incomplete: {_save_again(folder)}"
        )
    backbone = build_backbone(**description["config"])
    try:
        weights = load_file(str(weights_file), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        message = f"{weights_file} is corrupt ({error}); {_save_again(folder)}"
        raise SelfSupError(message) from None
    try:
        backbone.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise SelfSupError(
            f"{weights_file} does not match the architecture in {DESCRIPTION} ({first}); "
            "the two files come from different saves"
        ) from None
    config = description["config"]
    if check_inputs and {"in_channels", "image_size"} <= config.keys():  # not text backbones
        backbone.register_forward_pre_hook(
            InputCheck(int(config["in_channels"]), int(config["image_size"]))
        )
    return backbone.eval()


def _save_again(folder: Path) -> str:
    """How to write a damaged save again: a run's export is rewritten from its checkpoint."""
    run = folder.parent
    if folder.name == "backbone" and (run / "run.yaml").is_file():
        return f"export it again from the run's checkpoint with `selfsup pretrain --resume {run}`"
    return "save the backbone again"


def _folder(path: str | Path) -> Path:
    path = Path(path)
    if path.name in (WEIGHTS, DESCRIPTION):
        return path.parent
    if not path.exists():
        raise SelfSupError(f"{path} does not exist; pass the folder given to save_backbone")
    return path


__all__ = ["InputCheck", "load_backbone", "prepare_images", "read_description", "save_backbone"]
