"""CIFAR-10 in its binary (`cifar-10-batches-bin`) and python-pickled (`cifar-10-batches-py`) forms.

Binary records are 3073 bytes: one label byte, then 1024 red, 1024 green, 1024 blue pixels of a
32x32 image (www.cs.toronto.edu/~kriz/cifar.html). The pickled batches hold the same arrays in a
dict; they are read with a restricted unpickler because a pickle from the internet can run code.
"""

from __future__ import annotations

import importlib
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfsup.data.base import TensorImageDataset
from selfsup.errors import DataError

RECORD_BYTES = 1 + 3 * 32 * 32
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip

# The only globals a pickled dict of numpy arrays needs (numpy 1.x and 2.x module paths);
# _codecs.encode rebuilds bytes in protocol-2 pickles written by Python 3 and runs no code.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays; refuses every other global (os.system, ...)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")
        # Pickles name numpy.core (numpy 1) or numpy._core (numpy 2); import whichever exists
        # here without touching the deprecated alias.
        candidates = [module]
        if module.startswith("numpy.core."):
            candidates.insert(0, module.replace("numpy.core.", "numpy._core.", 1))
        elif module.startswith("numpy._core."):
            candidates.append(module.replace("numpy._core.", "numpy.core.", 1))
        for candidate in candidates:
            try:
                return getattr(importlib.import_module(candidate), name)
            except (ImportError, AttributeError):
                continue
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not available in this numpy")


def safe_unpickle(path: Path) -> Any:
    """Load a pickle file allowing only numpy array reconstruction; DataError otherwise."""
    try:
        with path.open("rb") as f:
            return RestrictedUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataError(
            f"{path} was refused: {exc}; it is not a plain CIFAR-10 batch (untrusted pickles are "
            "never executed), use the binary version cifar-10-batches-bin instead"
        ) from exc
    except (EOFError, ValueError, TypeError, KeyError, IndexError, OSError) as exc:
        raise DataError(
            f"{path} is not a readable CIFAR-10 pickle ({exc}); re-download it"
        ) from exc


def _batch_number(path: Path) -> int:
    match = re.search(r"(\d+)", path.name)
    return int(match.group(1)) if match else 0


def resolve_cifar_dir(directory: Path) -> tuple[Path, str]:
    """The folder holding the batches and its format, "bin" or "py"."""
    if not directory.is_dir():
        raise DataError(
            f"cifar10: directory {directory} does not exist; point cifar10:DIR at the folder with "
            "the batches or pass download=True (--download)"
        )
    for sub in ("cifar-10-batches-bin", "cifar-10-batches-py"):
        if (directory / sub).is_dir():
            directory = directory / sub
            break
    if any(directory.glob("data_batch_*.bin")) or any(directory.glob("test_batch*.bin")):
        return directory, "bin"
    if any(re.fullmatch(r"(data_batch_\d+|test_batch)", p.name) for p in directory.iterdir()):
        return directory, "py"
    raise DataError(
        f"cifar10: no CIFAR-10 batches in {directory} (expected data_batch_1.bin... or the "
        "python batches data_batch_1...); extract cifar-10-binary.tar.gz there or pass "
        "download=True (--download)"
    )


def _split_files(directory: Path, fmt: str, split: str) -> list[Path]:
    if split == "train":
        pattern = r"data_batch_\d+\.bin" if fmt == "bin" else r"data_batch_\d+"
        files = [p for p in directory.iterdir() if re.fullmatch(pattern, p.name)]
        files.sort(key=_batch_number)
    else:
        names = ["test_batch.bin", "test_batch_first1000.bin"] if fmt == "bin" else ["test_batch"]
        files = [directory / n for n in names if (directory / n).is_file()][:1]
    if not files:
        wanted = "data_batch_*" if split == "train" else " or ".join(names)
        raise DataError(
            f"cifar10: no {split} batches ({wanted}) in {directory}; "
            "extract the full archive there or pass download=True (--download)"
        )
    return files


def _read_binary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD_BYTES:
        raise DataError(
            f"{path} is {raw.size} bytes, not a multiple of the {RECORD_BYTES}-byte CIFAR-10 "
            "record; the file is truncated or not CIFAR-10 binary, re-download it"
        )
    records = raw.reshape(-1, RECORD_BYTES)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0]


def _read_pickled(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = safe_unpickle(path)
    if not isinstance(batch, dict):
        raise DataError(f"{path} does not hold a dict of arrays; is it a CIFAR-10 batch?")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{path} lacks 'data' or 'labels' entries; is it a CIFAR-10 batch?")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.size != len(data) * 3072 or labels.ndim != 1:
        raise DataError(
            f"{path} has data {data.dtype} {data.shape} and labels {labels.shape}; expected "
            "uint8 (N, 3072) and (N,), is it a CIFAR-10 batch?"
        )
    if len(data) != len(labels):
        raise DataError(f"{path} has {len(data)} images but {len(labels)} labels; re-download it")
    return data.reshape(-1, 3, 32, 32), labels


def _class_names(directory: Path) -> list[str]:
    for name in ("batches.meta.txt", "label_names.txt"):
        path = directory / name
        if path.is_file():
            names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            if len(names) == 10:
                return names
    return list(CIFAR10_CLASSES)


def load_cifar10(directory: Path, split: str) -> TensorImageDataset:
    """Load one split of CIFAR-10 (binary or python batches) as uint8 images (N, 3, 32, 32)."""
    directory, fmt = resolve_cifar_dir(directory)
    reader = _read_binary if fmt == "bin" else _read_pickled
    parts = [reader(path) for path in _split_files(directory, fmt, split)]
    images = np.concatenate([p[0] for p in parts])  # one copy, owned and writable
    labels = np.concatenate([p[1] for p in parts]).astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(
            f"cifar10: labels in {directory} range {labels.min()}..{labels.max()}, expected 0..9; "
            "is it CIFAR-10 (not CIFAR-100)?"
        )
    return TensorImageDataset(
        torch.from_numpy(images), torch.from_numpy(labels), _class_names(directory), name="cifar10"
    )
