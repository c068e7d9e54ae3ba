"""Save and load a backbone as safetensors weights + a JSON description (never pickle)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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
    if not file.is_file():
        raise SelfSupError(f"no {DESCRIPTION} in {folder}; point to a folder made by save_backbone")
    try:
        description = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SelfSupError(f"{file} is not valid JSON ({error}); save the backbone again") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise SelfSupError(f"{file} is not a {FORMAT} description; save the backbone again")
    return description


def load_backbone(path: str | Path) -> nn.Module:
    """Rebuild a saved backbone from its folder (or either of its files), in eval mode."""
    from selfsup.backbones import build_backbone  # the registry imports this module

    description = read_description(path)
    folder = _folder(path)
    weights_file = folder / WEIGHTS
    if not weights_file.is_file():
        raise SelfSupError(f"no {WEIGHTS} in {folder}; the save was incomplete, save it again")
    backbone = build_backbone(**description["config"])
    try:
        weights = load_file(str(weights_file), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        message = f"{weights_file} is corrupt ({error}); save the backbone again"
        raise SelfSupError(message) from None
    try:
        backbone.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise SelfSupError(
            f"{weights_file} does not match the architecture in {DESCRIPTION} ({first}); "
            "the two files come from different saves"
        ) from None
    return backbone.eval()


def _folder(path: str | Path) -> Path:
    path = Path(path)
    if path.name in (WEIGHTS, DESCRIPTION):
        return path.parent
    if not path.exists():
        raise SelfSupError(f"{path} does not exist; pass the folder given to save_backbone")
    return path


__all__ = ["load_backbone", "read_description", "save_backbone"]
