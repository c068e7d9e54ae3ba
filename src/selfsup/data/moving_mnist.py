"""Moving MNIST, generated from the MNIST digits: Srivastava, Mansimov, Salakhutdinov,
"Unsupervised Learning of Video Representations using LSTMs", ICML 2015.

Each clip shows 2 MNIST digits (28x28) bouncing inside a 64x64 frame for 20 frames; where they
overlap the brighter pixel wins. Clip i is a pure function of (seed, i): nothing is stored, and
any clip can be regenerated alone. Train clips use MNIST train digits, test clips MNIST test
digits. Unlike the original we always pick two *different* digit classes, so the downstream
label "which digits does this clip show" is always a set of two (multi-hot over 10 classes).

`moving-mnist:DIR` (DIR = the MNIST IDX folder) gives 2,000 train / 500 test clips; options
`moving-mnist:DIR?clips=5000&frames=20&size=64&seed=0` change that. `spin=S` (not in the
original; default 0, off) also turns each digit as it moves, from a random angle at a random
S/2 to S degrees per frame either way, so that what a digit looks like changes with time too;
`still=1` (also not in the original) keeps each digit where it starts, so that with `spin` the
turns are all that changes with time.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from selfsup.data.idx import MNIST_CLASSES, load_idx_dataset
from selfsup.data.video import VideoDataset, parse_options, resize_clips
from selfsup.errors import SelfSupError

DIGIT = 28
DEFAULTS = {"clips": 2000, "frames": 20, "size": 64, "seed": 0, "digits": 2, "spin": 0, "still": 0}
SPEED = (2.0, 5.0)  # pixels per frame at 64 px, uniform in this range


class MovingClip(NamedTuple):
    frames: np.ndarray  # uint8 (T, size, size)
    digits: np.ndarray  # MNIST labels of the digits shown (num_digits,)
    positions: np.ndarray  # top-left corner (row, col) of each digit per frame (D, T, 2)


def bounce_path(
    rng: np.random.Generator, frames: int, limit: int, still: bool = False
) -> np.ndarray:
    """Integer top-left positions (frames, 2) of a digit moving in a straight line at constant
    speed and reflecting off the walls, so it stays inside [0, limit] on both axes; a `still`
    digit stays where it starts (the same draws are made either way)."""
    position = rng.uniform(0, limit, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    velocity = rng.uniform(*SPEED) * np.array([np.sin(angle), np.cos(angle)])
    if still:
        velocity = np.zeros(2)
    path = np.empty((frames, 2))
    for t in range(frames):
        path[t] = position
        position = position + velocity
        for axis in range(2):  # reflect; one bounce per step suffices as speed < limit
            if position[axis] < 0:
                position[axis], velocity[axis] = -position[axis], -velocity[axis]
            elif position[axis] > limit:
                position[axis] = 2 * limit - position[axis]
                velocity[axis] = -velocity[axis]
    return np.clip(np.rint(path), 0, limit).astype(np.int64)


def moving_mnist_clip(
    images: np.ndarray,
    labels: np.ndarray,
    seed: int,
    index: int,
    *,
    frames: int = 20,
    size: int = 64,
    num_digits: int = 2,
    spin: float = 0.0,
    still: bool = False,
) -> MovingClip:
    """Clip `index` of the set with this `seed`, from MNIST `images` (M, 28, 28) and `labels`."""
    if size < DIGIT:
        raise SelfSupError(f"moving-mnist frames must be at least {DIGIT} px, got size={size}")
    if not 1 <= num_digits <= 10:
        raise SelfSupError(f"moving-mnist shows 1 to 10 different digits, got {num_digits}")
    rng = np.random.default_rng([seed, index])
    chosen: list[int] = []
    while len(chosen) < num_digits:  # distinct classes: the label set has num_digits members
        i = int(rng.integers(len(images)))
        if all(labels[i] != labels[j] for j in chosen):
            chosen.append(i)
    paths = np.stack([bounce_path(rng, frames, size - DIGIT, still) for _ in chosen])
    digits = images[chosen]
    if spin:  # drawn after everything else: clips without spin stay as they were
        digits = np.stack([spun(digit, frames, spin, rng) for digit in digits])
    canvas = draw_digits(digits, paths, size)
    return MovingClip(canvas, labels[chosen].astype(np.int64), paths)


def spun(digit: np.ndarray, frames: int, spin: float, rng: np.random.Generator) -> np.ndarray:
    """The digit (28, 28) turned a little more in each of `frames` frames (frames, 28, 28):
    from a random angle, at a random spin/2 to spin degrees per frame, either way."""
    start = rng.uniform(0, 360)
    speed = rng.uniform(spin / 2, spin) * rng.choice([-1, 1])
    image = Image.fromarray(digit)
    return np.stack(
        [np.asarray(image.rotate(start + speed * t, Image.BILINEAR)) for t in range(frames)]
    )


def draw_digits(digits: np.ndarray, paths: np.ndarray, size: int) -> np.ndarray:
    """Frames uint8 (T, size, size) showing digit images (D, 28, 28), or one image per frame
    (D, T, 28, 28), at the top-left corners `paths` (D, T, 2); where digits overlap the
    brighter pixel wins."""
    frames = paths.shape[1]
    canvas = np.zeros((frames, size, size), dtype=np.uint8)
    for digit, path in zip(digits, paths, strict=True):
        looks = digit if digit.ndim == 3 else [digit] * frames
        for t, ((row, col), look) in enumerate(zip(path, looks, strict=True)):
            window = canvas[t, row : row + DIGIT, col : col + DIGIT]
            np.maximum(window, look, out=window)
    return canvas


def generate_clips(text: str, split: str) -> list[MovingClip]:
    """The clips of a split of `DIR[?clips=N&...]`, with their digits and paths: the test split
    has a quarter as many clips (500 by default), from MNIST test digits."""
    directory, options = parse_options(text, DEFAULTS)
    mnist = load_idx_dataset(directory, split, "mnist")
    images = mnist.images[:, 0].numpy()
    labels = mnist.labels.numpy()
    count = options["clips"] if split == "train" else max(1, options["clips"] // 4)
    # Train and test draw from different seed streams as well as different digits.
    stream = options["seed"] * 2 + (split == "test")
    return [
        moving_mnist_clip(
            images,
            labels,
            stream,
            i,
            frames=options["frames"],
            size=options["size"],
            num_digits=options["digits"],
            spin=options["spin"],
            still=bool(options["still"]),
        )
        for i in range(count)
    ]


def load_moving_mnist(text: str, split: str, image_size: int | None = None) -> VideoDataset:
    """`DIR[?clips=N&frames=T&size=S&seed=K&digits=D&spin=S&still=1]` -> VideoDataset with multi-hot
    labels (see generate_clips)."""
    made = generate_clips(text, split)
    clips = torch.from_numpy(np.stack([m.frames for m in made]))[:, :, None]
    multi_hot = torch.zeros(len(made), len(MNIST_CLASSES), dtype=torch.int64)
    for i, m in enumerate(made):
        multi_hot[i, torch.from_numpy(m.digits)] = 1
    return VideoDataset(
        resize_clips(clips, image_size), multi_hot, list(MNIST_CLASSES), name="moving-mnist"
    )
