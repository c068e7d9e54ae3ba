"""Jigsaw puzzles: which permutation shuffled the 9 tiles of an image?

Noroozi & Favaro, ECCV 2016, "Unsupervised Learning of Visual Representations by Solving
Jigsaw Puzzles". https://arxiv.org/abs/1603.09246

Free labels: the image is cut into a 3x3 grid of cells and a tile is cropped at a random offset
inside each cell (the paper's 64 px tiles in 75 px cells), so neighbouring tiles never share an
edge. The tiles are shuffled by one of P permutations, chosen once, greedily, to be far apart in
Hamming distance; the shared tile encoder (the backbone) encodes each tile, the 9 features are
concatenated in the shuffled order and an MLP names the permutation's index.

Permutation convention: permutation `perm` puts tile perm[i] at position i; the inverse
(argsort) puts them back. The identity is not special: it is in the set only if the greedy
search picks it, or when `include_identity=True`, which starts the search from it (class 0).
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.errors import SelfSupError
from selfsup.tasks.base import Batch, Task
from selfsup.tasks.patches import (
    check_grid,
    encoder_input_size,
    gather_patches,
    grid_corners,
    paste_patches,
    remove_chromatic_aberration,
    resize_patches,
    resolve_chromatic,
)

TILES = 9


@functools.lru_cache(maxsize=1)
def _all_permutations() -> torch.Tensor:
    """The 9! permutations (362880, 9) uint8, the identity first."""
    table = np.array(list(itertools.permutations(range(TILES))), dtype=np.uint8)
    return torch.from_numpy(table)


def _greedy_max_min(size: int, seed: int, include_identity: bool) -> torch.Tensor:
    candidates = _all_permutations()
    generator = torch.Generator().manual_seed(seed)
    index = (
        0 if include_identity else int(torch.randint(len(candidates), (1,), generator=generator))
    )
    # nearest[k]: distance from candidate k to the closest chosen permutation.
    nearest = torch.full((len(candidates),), TILES + 1, dtype=torch.int16)
    chosen = [index]
    for _ in range(size - 1):
        distance = (candidates != candidates[index]).sum(dim=1, dtype=torch.int16)
        torch.minimum(nearest, distance, out=nearest)
        index = int(nearest.argmax())  # the first maximum on ties: deterministic
        chosen.append(index)
    return candidates[chosen].long()


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "selfsup" / "jigsaw"


@functools.lru_cache(maxsize=8)
def permutation_set(size: int, seed: int = 0, include_identity: bool = False) -> torch.Tensor:
    """`size` permutations of the 9 tiles (int64 (size, 9)) by the paper's greedy search.

    Start from a random permutation (the identity if `include_identity`), then repeatedly add
    the candidate whose smallest Hamming distance to those chosen so far is the largest.
    Deterministic for (size, seed, include_identity). Each step compares all 9! candidates
    (1000 permutations take tens of seconds on a CPU), so sets are cached per process and on
    disk ($XDG_CACHE_HOME/selfsup/jigsaw); a cache that cannot be written is skipped.
    """
    if not 1 <= size <= math.factorial(TILES):
        raise SelfSupError(
            f"jigsaw: permutations must be between 1 and {math.factorial(TILES)}, got {size}"
        )
    path = _cache_dir() / f"maxmin_{size}_seed{seed}{'_identity' if include_identity else ''}.npy"
    try:
        perms = torch.from_numpy(np.load(path, allow_pickle=False)).long()
        if perms.shape == (size, TILES) and (perms.sort(dim=1).values == torch.arange(9)).all():
            return perms
    except (OSError, ValueError):
        pass
    perms = _greedy_max_min(size, seed, include_identity)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, perms.to(torch.uint8).numpy(), allow_pickle=False)
        os.replace(tmp, path)
    except OSError:
        pass
    return perms


def min_hamming(perms: torch.Tensor) -> int:
    """The smallest Hamming distance between two different permutations of a set."""
    distance = (perms[:, None, :] != perms[None, :, :]).sum(dim=2)
    distance.fill_diagonal_(TILES + 1)
    return int(distance.min())


def shuffle_tiles(tiles: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """(B, 9, ...) tiles -> position i holds tile perms[:, i]."""
    rows = torch.arange(tiles.shape[0], device=tiles.device)[:, None]
    return tiles[rows, perms]


def unshuffle_tiles(shuffled: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """The inverse of shuffle_tiles: puts every tile back in its own cell."""
    return shuffle_tiles(shuffled, perms.argsort(dim=1))


def permutation_head(in_dim: int, hidden_dim: int, classes: int) -> nn.Sequential:
    """The paper's fc7-fc8 on the 9 tiles' concatenated features."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim, bias=False),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, classes),
    )


class Jigsaw(Task):
    name = "jigsaw"

    def __init__(
        self,
        backbone: nn.Module,
        image_shape: tuple[int, int, int],
        *,
        permutations: int = 100,
        permutation_seed: int = 0,
        include_identity: bool = False,
        cell_size: int | None = None,
        jitter: int | None = None,
        chromatic: str = "auto",
        chromatic_p: float = 1.0,
        input_size: int | None = None,
        hidden_dim: int | None = None,
    ) -> None:
        """`cell_size` defaults to a third of the image, `jitter` (how far a tile can move in
        its cell; tile = cell - jitter) to a quarter of the cell: 28 px -> 9 px cells, 7 px
        tiles; 32 px -> 10 px cells, 8 px tiles, close to the paper's 64 / 75 ratio.
        """
        super().__init__(backbone)
        channels, height, width = image_shape
        if height != width:
            raise SelfSupError(
                f"jigsaw needs square images, got {height}x{width}; resize the data (--image-size)"
            )
        self.image_size = height
        self.cell_size = int(cell_size or height // 3)
        self.jitter = self.cell_size // 4 if jitter is None else int(jitter)
        self.tile_size = self.cell_size - self.jitter
        check_grid(height, self.tile_size, self.cell_size, (0, self.jitter), self.name)
        perms = permutation_set(permutations, permutation_seed, include_identity)
        # A buffer, so a checkpoint carries the exact set its head was trained on.
        self.register_buffer("permutations", perms.clone())
        self.min_hamming = min_hamming(perms)
        self.chromatic = resolve_chromatic(chromatic, channels)
        self.chromatic_p = chromatic_p
        self.input_size = input_size or encoder_input_size(backbone, height, self.tile_size)
        feature_dim = backbone.feature_dim
        self.head = permutation_head(
            TILES * feature_dim, hidden_dim or 2 * feature_dim, permutations
        )

    def make_puzzles(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Shuffled tiles (B, 9, C, t, t), permutation indices (B,), tile corners (B, 9, 2)."""
        b = images.shape[0]
        corners = grid_corners(
            b,
            self.image_size,
            self.tile_size,
            self.cell_size,
            (0, self.jitter),
            images.device,
            generator,
        )
        tiles = gather_patches(images, corners, self.tile_size)
        gen_device = generator.device if generator is not None else images.device
        labels = torch.randint(
            len(self.permutations), (b,), generator=generator, device=gen_device
        ).to(images.device)
        return shuffle_tiles(tiles, self.permutations[labels]), labels, corners

    def prepare(self, shuffled: torch.Tensor) -> torch.Tensor:
        """Chromatic aberration handling, tile by tile."""
        flat = remove_chromatic_aberration(shuffled.flatten(0, 1), self.chromatic, self.chromatic_p)
        return flat.view_as(shuffled)

    def classify(self, shuffled: torch.Tensor) -> torch.Tensor:
        """Permutation logits (B, P) for prepared shuffled tiles (B, 9, C, t, t)."""
        features = self.encode(resize_patches(shuffled.flatten(0, 1), self.input_size))
        return self.head(features.view(shuffled.shape[0], -1))

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        shuffled, labels, _ = self.make_puzzles(batch["images"])
        logits = self.classify(self.prepare(shuffled))
        accuracy = (logits.argmax(1) == labels).float().mean()
        return {"loss": F.cross_entropy(logits, labels), "accuracy": accuracy}

    @torch.no_grad()
    def show(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        images = images[:8]
        shuffled, labels, corners = self.make_puzzles(images)
        prepared = self.prepare(shuffled)
        predicted = self.classify(prepared).argmax(1)

        def mosaic(tiles: torch.Tensor) -> torch.Tensor:
            canvas = torch.full_like(images, 0.5)
            paste_patches(canvas, tiles, corners)
            return canvas

        panels = [
            images,
            mosaic(prepared),
            mosaic(unshuffle_tiles(prepared, self.permutations[predicted])),
            mosaic(unshuffle_tiles(prepared, self.permutations[labels])),
        ]
        return {
            "Jigsaw: image, shuffled tiles, solved by the predicted permutation, "
            "solved by the true one": torch.stack(panels, dim=1).flatten(0, 1)
        }
