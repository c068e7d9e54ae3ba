"""Video as the engine sees it: frames of clips, with each frame's whole clip beside it.

A `VideoDataset` holds uint8 clips (N, T, C, H, W) and *is* the image dataset of their N*T
frames (a view, no copy). So every image task (SimCLR, rotation, ...) trains on frames without
knowing about video, while every training batch also carries, through the `extras` hook:

  "clips"     the clip each frame comes from, (B, T, C, H, W): what video tasks use;
  "partners"  another frame of the same clip: MICLe's positive (a clip is a group);
  "groups"    the clip ids.

Video tasks take windows out of those clips with `sample_windows` (length, stride).

`video:DIR` reads DIR/<clip>/*.png (one folder of frame images per clip) or DIR/*.npy (one
array per clip: (T, H, W), (T, H, W, C) or (T, C, H, W) with C in 1 or 3). Long videos are cut
into clips of `length` frames taken every `stride` frames: `video:DIR?length=16&stride=2`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from selfsup.data.base import TensorImageDataset, note
from selfsup.data.grouped import GroupedImageDataset
from selfsup.errors import DataError, NoTestSplit, SelfSupError


class VideoDataset(TensorImageDataset):
    """The frames of uint8 clips (N, T, C, H, W); `clip_labels` (N, K) multi-hot or None;
    `clip_files` the file or folder each clip was cut from, where the source has files.

    Frames are unlabelled (-1): a clip's labels (which digits it shows) belong to the clip.
    """

    def __init__(
        self,
        clips: torch.Tensor,
        clip_labels: torch.Tensor | None = None,
        classes: list[str] | None = None,
        name: str = "video",
        clip_files: list[str] | None = None,
    ) -> None:
        if clips.dtype != torch.uint8 or clips.ndim != 5:
            raise ValueError(
                f"clips must be a uint8 tensor (N, T, C, H, W), got {clips.dtype} "
                f"{tuple(clips.shape)}"
            )
        if clip_labels is not None and clip_labels.shape[0] != clips.shape[0]:
            raise ValueError(
                f"{name}: {clips.shape[0]} clips but {clip_labels.shape[0]} label rows"
            )
        self.clips = clips.contiguous()
        super().__init__(self.clips.flatten(0, 1), None, classes, name)
        self.clip_labels = clip_labels
        self.clip_files = clip_files
        self.frames_per_clip = int(clips.shape[1])
        self.clip_ids = torch.arange(clips.shape[0]).repeat_interleave(self.frames_per_clip)
        # The grouped source's partner draw, with one group per clip.
        self._grouping = GroupedImageDataset(TensorImageDataset(self.images), self.clip_ids)

    @property
    def num_clips(self) -> int:
        return int(self.clips.shape[0])

    def extras(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        indices = indices.cpu()
        clip = self.clip_ids[indices]
        partners = self._grouping.partner_indices(indices)
        return {"clips": self.clips[clip], "partners": self.images[partners], "groups": clip}


def resize_clips(clips: torch.Tensor, size: int | None) -> torch.Tensor:
    """uint8 clips (N, T, C, H, W) resized frame by frame to size x size (None: unchanged)."""
    if size is None or clips.shape[-2:] == (size, size):
        return clips
    from selfsup.data.spec import resize_images

    n, t = clips.shape[:2]
    return resize_images(clips.flatten(0, 1), size).view(n, t, clips.shape[2], size, size)


def check_window(clips: torch.Tensor, length: int, stride: int = 1) -> int:
    """The frames a window of `length` frames `stride` apart spans in clips (B, T, ...), or a
    one-line error when it does not fit."""
    span = (length - 1) * stride + 1
    if length < 1 or stride < 1 or span > clips.shape[1]:
        raise SelfSupError(
            f"a window needs {span} frames: the task takes windows of {span} frames but the "
            f"clips have {clips.shape[1]}; use longer clips (e.g. video:DIR?length=N), shorter "
            "windows or a smaller gap or stride"
        )
    return span


def sample_windows(
    clips: torch.Tensor, length: int, stride: int = 1, *, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One window of `length` frames, `stride` apart, from each clip (B, T, ...).

    Returns (windows (B, length, ...), frame indices (B, length)). Starts are uniform, or drawn
    in proportion to `weights` (B, number of possible starts) when given, with torch's global
    RNG (the engine seeds it per step).
    """
    batch, frames = clips.shape[:2]
    span = check_window(clips, length, stride)
    starts_possible = frames - span + 1
    if weights is None:
        starts = torch.randint(starts_possible, (batch,), device=clips.device)
    else:
        starts = torch.multinomial(weights.float() + 1e-6, 1).squeeze(1)
    index = starts[:, None] + stride * torch.arange(length, device=clips.device)
    return gather_frames(clips, index), index


def gather_frames(clips: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """clips (B, T, ...) at per-clip frame indices (B, L) -> (B, L, ...)."""
    rows = torch.arange(clips.shape[0], device=clips.device)[:, None]
    return clips[rows, index]


# ---- video:DIR ------------------------------------------------------------------------------


def parse_options(text: str, allowed: dict[str, int]) -> tuple[Path, dict[str, int]]:
    """'DIR?length=16&stride=2' -> (Path(DIR), {...}); `allowed` holds names and defaults."""
    path, _, query = text.partition("?")
    options = dict(allowed)
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if key not in allowed or not sep:
            raise SelfSupError(
                f"unknown data option {item!r}; valid: {', '.join(f'{k}=N' for k in allowed)}"
            )
        try:
            options[key] = int(value)
        except ValueError:
            raise SelfSupError(f"data option {key} needs a whole number, got {value!r}") from None
        minimum = 0 if allowed[key] == 0 else 1  # options that default to 0 (seed, spin)
        if options[key] < minimum:
            raise SelfSupError(f"data option {key} must be at least {minimum}, got {value}")
    return Path(path).expanduser(), options


def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)  # never unpickle untrusted files
    except (OSError, ValueError) as exc:
        raise DataError(f"video: {path} is not a readable .npy array ({exc})") from exc
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise DataError(
            f"video: {path} has shape {array.shape}; a clip must be (T, H, W), (T, H, W, C) "
            "or (T, C, H, W) with C = 1 or 3"
        )
    if array.size == 0:
        raise DataError(f"video: {path} holds no frames (shape {array.shape}); drop the file")
    if array.dtype != np.uint8:
        # Floats are taken as [0, 1] intensities, as the rest of selfsup uses them; anything
        # else (0..255 floats, int16) would be clipped to white or black without a word.
        in_unit_range = np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1
        if array.dtype.kind not in "fb" or not in_unit_range:  # floats or booleans in [0, 1]
            raise DataError(
                f"video: {path} holds {array.dtype} values from {array.min()} to {array.max()};"
                " a clip is uint8 (0-255) or floats in [0, 1]: convert it, e.g. "
                "(array / 255).astype('float32') or array.astype('uint8')"
            )
        array = np.clip(np.asarray(array, dtype=np.float32) * 255 + 0.5, 0, 255).astype(np.uint8)
    return array


def _in_name_order(paths: Iterable[Path]) -> list[Path]:
    """Paths by name with numbers compared as numbers: frame_2 before frame_10, as frames and
    clips are often numbered without zero padding (zero-padded names keep their order)."""
    from selfsup.data.folder import natural_key

    return sorted(paths, key=lambda p: natural_key(p.name))


def _read_frame_folder(folder: Path, size: int) -> np.ndarray:
    from selfsup.data.folder import _image_files, load_image

    files = _in_name_order(_image_files(folder, recursive=False))
    if not files:
        raise DataError(f"video: clip folder {folder} has no frame images")
    return np.stack([load_image(f, size).numpy() for f in files])


def _windows(video: np.ndarray, length: int, stride: int) -> list[np.ndarray]:
    """Non-overlapping clips of `length` frames, `stride` apart, cut from one video."""
    span = (length - 1) * stride + 1
    return [video[s : s + span : stride] for s in range(0, len(video) - span + 1, span)]


def load_video(text: str, split: str, image_size: int | None = None) -> VideoDataset:
    """`video:DIR[?length=L&stride=S]` as unlabelled clips of L frames (all in "train")."""
    directory, options = parse_options(text, {"length": 16, "stride": 1})
    if directory.is_file():
        raise DataError(
            f"video: {directory} is a file; video:DIR takes the directory that holds one "
            ".npy array or one folder of frame images per clip"
        )
    if not directory.is_dir():
        raise DataError(f"video: {directory} is not a directory of clip folders or .npy files")
    if split != "train":
        raise NoTestSplit(
            f"video: {directory} is unlabelled and has no test split; use it for pretraining"
        )
    size = image_size or 64
    arrays = _in_name_order(directory.glob("*.npy"))
    folders = _in_name_order(
        p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    if arrays:
        sources, videos = arrays, [_read_npy(p) for p in arrays]
    elif folders:
        sources, videos = folders, [_read_frame_folder(p, size) for p in folders]
    else:
        raise DataError(
            f"video: {directory} has neither .npy clips nor sub-folders of frames; add one "
            "folder of frame images (or one .npy array) per clip"
        )
    channels = [v.shape[1] for v in videos]
    if len(set(channels)) > 1:
        gray, colour = (sources[channels.index(c)].name for c in (1, 3))
        raise DataError(
            f"video: {directory} mixes gray and colour clips (gray: {gray}, colour: {colour}, "
            "...); convert them to one"
        )
    windows = [_windows(v, options["length"], options["stride"]) for v in videos]
    clips = [w for per_video in windows for w in per_video]
    if not clips:
        longest = max(len(v) for v in videos)
        raise DataError(
            f"video: no clip in {directory} has {options['length']} frames at stride "
            f"{options['stride']} (the longest has {longest}); lower ?length= or ?stride="
        )
    short = [src.name for src, cut in zip(sources, windows, strict=True) if not cut]
    if short:
        span = (options["length"] - 1) * options["stride"] + 1
        note(
            f"video: {len(short)} of {len(videos)} clips in {directory} have fewer than the "
            f"{span} frames of length={options['length']} at stride={options['stride']} and "
            f"are left out ({', '.join(short[:3])}{', ...' if len(short) > 3 else ''}); lower "
            "?length= or ?stride= to keep them"
        )
    tensors = [resize_clips(torch.from_numpy(np.ascontiguousarray(c))[None], size) for c in clips]
    files = [str(src) for src, cut in zip(sources, windows, strict=True) for _ in cut]
    return VideoDataset(torch.cat(tensors), name=f"video:{directory.name}", clip_files=files)
