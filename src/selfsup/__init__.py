"""selfsup: self-supervised learning, from pretext task to few-label evaluation.

The top level is imported lazily so the command line starts fast; see README.md for a tour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from selfsup.backbones import load_backbone, save_backbone
    from selfsup.backbones.export import prepare_images
    from selfsup.classifier import load_classifier

__all__ = ["__version__", "load_backbone", "load_classifier", "prepare_images", "save_backbone"]


def __getattr__(name: str) -> Any:
    if name in ("load_backbone", "save_backbone"):
        from selfsup import backbones

        return getattr(backbones, name)
    if name == "prepare_images":
        from selfsup.backbones.export import prepare_images

        return prepare_images
    if name == "load_classifier":
        from selfsup.classifier import load_classifier

        return load_classifier
    raise AttributeError(f"module 'selfsup' has no attribute {name!r}")
