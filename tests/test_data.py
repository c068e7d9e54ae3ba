"""Data sources against the real files in shared/data and against every kind of bad input."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.data import DATA_SPECS, load_images
from selfsup.data.base import ChannelConvertedDataset, TensorImageDataset, convert_channels
from selfsup.data.cifar import safe_unpickle
from selfsup.data.folder import load_image
from selfsup.errors import DataError, SelfSupError


def write_idx(path: Path, array: np.ndarray, magic: int | None = None, compress: bool = True):
    """Write a uint8 array as an IDX file (gzipped when the name ends in .gz)."""
    magic = magic if magic is not None else 0x0800 + array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def make_idx_dir(root: Path, n_train: int = 6, n_test: int = 4) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)))
    return root


# ---------------------------------------------------------------- real data (shared/data)


@pytest.fixture(scope="module")
def fmnist_train(shared_data: Path):
    return load_images(f"fashion-mnist:{shared_data / 'fashion-mnist'}", "train")


def test_fashion_mnist_train(fmnist_train) -> None:
    dataset = fmnist_train
    assert len(dataset) == 60000
    assert dataset.images.shape == (60000, 1, 28, 28) and dataset.images.dtype == torch.uint8
    assert dataset.labels.dtype == torch.int64
    assert torch.bincount(dataset.labels).tolist() == [6000] * 10
    assert dataset.classes[0] == "T-shirt/top" and dataset.classes[9] == "Ankle boot"
    assert dataset.has_labels and dataset.name == "fashion-mnist"
    assert abs(dataset.images.float().mean().item() / 255 - 0.2860) < 1e-3  # SOURCE.md value


def test_fashion_mnist_and_mnist_test(shared_data: Path) -> None:
    fm = load_images(f"fashion-mnist:{shared_data / 'fashion-mnist'}", "test")
    assert fm.image_shape == (1, 28, 28) and len(fm) == 10000
    mnist = load_images(f"mnist:{shared_data / 'mnist'}", "test")
    counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # SOURCE.md
    assert torch.bincount(mnist.labels).tolist() == counts
    assert mnist.classes == [str(i) for i in range(10)]


def test_cifar10_binary(shared_data: Path) -> None:
    folder = shared_data / "cifar10"
    n_batches = len(list(folder.glob("data_batch_*.bin")))
    train = load_images(f"cifar10:{folder}", "train")
    assert len(train) == 10000 * n_batches and train.image_shape == (3, 32, 32)
    assert train.labels.min() == 0 and train.labels.max() == 9
    assert train.classes[0] == "airplane" and train.classes[9] == "truck"
    record = np.fromfile(folder / "data_batch_1.bin", dtype=np.uint8, count=3073)
    assert int(train.labels[0]) == record[0]
    assert torch.equal(train.images[0], torch.from_numpy(record[1:].reshape(3, 32, 32)))
    test = load_images(f"cifar10:{folder}", "test")
    assert len(test) == 1000 and test.images.dtype == torch.uint8


def test_cifar10_parent_folder_and_errors(shared_data: Path, tmp_path: Path) -> None:
    inner = tmp_path / "cifar-10-batches-bin"
    inner.mkdir()
    (inner / "test_batch_first1000.bin").symlink_to(
        shared_data / "cifar10/test_batch_first1000.bin"
    )
    assert len(load_images(f"cifar10:{tmp_path}", "test")) == 1000
    with pytest.raises(DataError, match="no train batches"):
        load_images(f"cifar10:{tmp_path}", "train")
    (inner / "data_batch_1.bin").write_bytes(b"\0" * (3073 * 2 + 5))
    with pytest.raises(DataError, match=r"data_batch_1\.bin is 6151 bytes, not a multiple"):
        load_images(f"cifar10:{tmp_path}", "train")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no CIFAR-10 batches"):
        load_images(f"cifar10:{empty}", "train")


# ---------------------------------------------------------------- CIFAR python pickles


def test_cifar10_python_pickles(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {}
    # Protocol 2 is what the official python-2 batches use (numpy.core paths); 5 is the default.
    for name, n, protocol in (("data_batch_1", 3, 2), ("data_batch_2", 2, 5), ("test_batch", 4, 5)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        batches[name] = (data, labels)
        with (folder / name).open("wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": b"x"}, f, protocol)
    train = load_images(f"cifar10:{tmp_path}", "train")
    assert len(train) == 5 and train.image_shape == (3, 32, 32)
    expected = np.concatenate([batches["data_batch_1"][0], batches["data_batch_2"][0]])
    assert torch.equal(train.images.reshape(5, -1), torch.from_numpy(expected))
    assert train.labels.tolist() == batches["data_batch_1"][1] + batches["data_batch_2"][1]
    test = load_images(f"cifar10:{folder}", "test")
    assert test.labels.tolist() == batches["test_batch"][1]


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with (folder / "data_batch_1").open("wb") as f:
        pickle.dump({b"data": _Exploit(marker), b"labels": [0]}, f)
    with pytest.raises(DataError, match=r"data_batch_1 was refused: global '(os|posix)\.system'"):
        load_images(f"cifar10:{tmp_path}", "train")
    assert not marker.exists()
    with pytest.raises(DataError, match="not allowed"):
        safe_unpickle(folder / "data_batch_1")


# ---------------------------------------------------------------- digits and spec parsing


def test_digits_split_is_stratified_and_deterministic() -> None:
    train, test = load_images("digits", "train"), load_images("digits", "test")
    assert len(train) + len(test) == 1797 and abs(len(test) / 1797 - 0.25) < 0.01
    assert train.image_shape == (1, 8, 8) and train.images.dtype == torch.uint8
    assert int(train.images.max()) == 255 and train.classes == [str(i) for i in range(10)]
    fractions = torch.bincount(test.labels) / (
        torch.bincount(train.labels) + torch.bincount(test.labels)
    )
    assert ((fractions - 0.25).abs() < 0.02).all()
    assert torch.equal(load_images("digits", "test").images, test.images)
    assert load_images("digits", "test", image_size=16).image_shape == (1, 16, 16)


def test_bad_specs() -> None:
    with pytest.raises(SelfSupError, match="unknown data spec 'imagenet:/x'.*digits.*folder"):
        load_images("imagenet:/x")
    with pytest.raises(SelfSupError, match="folder:./pics"):
        load_images("./pics")
    with pytest.raises(SelfSupError, match="needs a directory"):
        load_images("mnist")
    with pytest.raises(SelfSupError, match="unknown split 'val'"):
        load_images("digits", "val")
    assert set(DATA_SPECS) == {
        "digits", "mnist", "fashion-mnist", "cifar10", "folder", "grouped", "moving-mnist", "video",
    }  # fmt: skip


# ---------------------------------------------------------------- IDX files and their failures


def test_idx_gz_and_uncompressed(tmp_path: Path) -> None:
    folder = make_idx_dir(tmp_path / "m")
    train = load_images(f"mnist:{folder}", "train", image_size=32)
    assert train.images.shape == (6, 1, 32, 32)
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    write_idx(folder / "t10k-images-idx3-ubyte", images, compress=False)
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([3, 7]))
    test = load_images(f"mnist:{folder}", "test")
    assert test.labels.tolist() == [3, 7]
    assert torch.equal(test.images[:, 0], torch.from_numpy(images.astype(np.uint8)))


def test_idx_missing_dir_and_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"mnist: directory .*nowhere does not exist"):
        load_images(f"mnist:{tmp_path / 'nowhere'}")
    folder = make_idx_dir(tmp_path / "m")
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"missing train-labels-idx1-ubyte\[\.gz\]"):
        load_images(f"mnist:{folder}")


def test_idx_truncated_and_corrupt_gzip(shared_data: Path, tmp_path: Path) -> None:
    folder = make_idx_dir(tmp_path / "m")
    raw = (shared_data / "fashion-mnist/t10k-labels-idx1-ubyte.gz").read_bytes()
    target = folder / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz is truncated"):
        load_images(f"fashion-mnist:{folder}", "test")
    corrupt = bytearray(raw)
    corrupt[len(raw) // 2 : len(raw) // 2 + 64] = bytes(64)
    target.write_bytes(bytes(corrupt))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz is corrupt"):
        load_images(f"fashion-mnist:{folder}", "test")
    target.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="not a gzip file"):
        load_images(f"fashion-mnist:{folder}", "test")


def test_idx_wrong_magic_dims_and_counts(tmp_path: Path) -> None:
    folder = make_idx_dir(tmp_path / "m")
    labels = folder / "train-labels-idx1-ubyte.gz"
    write_idx(labels, np.zeros(6), magic=2051)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz has IDX magic number 2051"):
        load_images(f"mnist:{folder}")
    write_idx(labels, np.zeros(4))
    with pytest.raises(DataError, match="has 6 images but .* has 4 labels"):
        load_images(f"mnist:{folder}")
    images = folder / "train-images-idx3-ubyte.gz"
    header = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (10, 28, 28))
    images.write_bytes(gzip.compress(header + bytes(5 * 28 * 28)))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz holds 3920 data bytes"):
        load_images(f"mnist:{folder}")


# ---------------------------------------------------------------- image folders


def save_image(path: Path, size: tuple[int, int], color, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def make_labelled(root: Path, per_class: int = 5) -> Path:
    for c, name in enumerate(["cat", "dog", "emu"]):
        for i in range(per_class):
            save_image(root / name / f"{i}.png", (20 + 7 * i, 30), (80 * c, 10 * i, 0))
    return root


def test_folder_labelled_with_holdout(tmp_path: Path) -> None:
    root = make_labelled(tmp_path / "imgs")
    save_image(root / "emu" / "gray.jpg", (24, 24), 128, mode="L")
    (root / ".DS_Store").write_bytes(b"\0")
    (root / "cat" / ".hidden.txt").write_text("x")
    train, test = load_images(f"folder:{root}", "train"), load_images(f"folder:{root}", "test")
    assert train.classes == ["cat", "dog", "emu"] and len(train) + len(test) == 16
    assert torch.bincount(test.labels).tolist() == [1, 1, 1]
    assert not set(train.paths) & set(test.paths)
    image, label = train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8 and label == 0
    assert train.get_batch(torch.tensor([0, 1])).shape == (2, 3, 32, 32)
    small = load_images(f"folder:{root}", "test", image_size=16)
    assert small.image_shape == (3, 16, 16) and small[2][0].shape == (3, 16, 16)
    clone = pickle.loads(pickle.dumps(train))  # DataLoader workers receive a pickled copy
    assert torch.equal(clone[3][0], train[3][0])


def test_folder_center_crop(tmp_path: Path) -> None:
    image = Image.new("RGB", (60, 20), (0, 0, 255))
    image.paste((255, 0, 0), (20, 0, 40, 20))  # the central square is red, the sides blue
    (tmp_path / "flat").mkdir()
    image.save(tmp_path / "flat" / "wide.png")
    pixels = load_images(f"folder:{tmp_path / 'flat'}", image_size=8)[0][0]
    assert pixels[0].min() > 240 and pixels[2].max() < 15


def test_folder_flat_is_unlabeled(tmp_path: Path) -> None:
    for i in range(4):
        save_image(tmp_path / "flat" / f"{i}.jpg", (40, 40), (i * 50, 0, 0))
    train = load_images(f"folder:{tmp_path / 'flat'}")
    assert len(train) == 4 and not train.has_labels and train.classes is None
    assert (train.labels == -1).all()
    with pytest.raises(DataError, match="no labels to evaluate on"):
        load_images(f"folder:{tmp_path / 'flat'}", "test")


def test_folder_train_test_subfolders(tmp_path: Path) -> None:
    make_labelled(tmp_path / "d" / "train", per_class=2)
    save_image(tmp_path / "d" / "test" / "emu" / "a.png", (32, 32), (1, 2, 3))
    save_image(tmp_path / "d" / "test" / "dog" / "b.png", (32, 32), (1, 2, 3))
    train = load_images(f"folder:{tmp_path / 'd'}", "train")
    test = load_images(f"folder:{tmp_path / 'd'}", "test")
    assert len(train) == 6 and test.classes == ["cat", "dog", "emu"]
    assert test.labels.tolist() == [1, 2]  # indices into the train classes
    save_image(tmp_path / "d" / "test" / "yak" / "c.png", (32, 32), (1, 2, 3))
    with pytest.raises(DataError, match=r"class folders \['yak'\]"):
        load_images(f"folder:{tmp_path / 'd'}", "test")


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_images(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="no images in"):
        load_images(f"folder:{tmp_path / 'empty'}")
    root = make_labelled(tmp_path / "imgs", per_class=2)
    (root / "dog" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"notes\.txt is not an image"):
        load_images(f"folder:{root}")
    flat = tmp_path / "flat"
    save_image(flat / "good.png", (8, 8), (1, 2, 3))
    (flat / "broken.png").write_bytes(b"\x89PNG garbage")
    dataset = load_images(f"folder:{flat}", image_size=8)
    assert dataset.paths[0].endswith("broken.png")  # listed up front, decoded on access
    with pytest.raises(DataError, match=r"broken\.png could not be decoded"):
        dataset[0]


def test_folder_train_and_val_are_splits_not_classes(tmp_path: Path, capsys) -> None:
    make_labelled(tmp_path / "d" / "train", per_class=2)
    save_image(tmp_path / "d" / "val" / "dog" / "a.png", (32, 32), (1, 2, 3))
    train = load_images(f"folder:{tmp_path / 'd'}", "train")
    test = load_images(f"folder:{tmp_path / 'd'}", "test")
    assert train.classes == test.classes == ["cat", "dog", "emu"] and len(train) == 6
    assert test.labels.tolist() == [1]
    assert "testing on val/" in capsys.readouterr().err
    # test/ wins over val/, and the note says val/ is not read.
    save_image(tmp_path / "d" / "test" / "emu" / "b.png", (32, 32), (1, 2, 3))
    assert load_images(f"folder:{tmp_path / 'd'}", "test").labels.tolist() == [2]
    assert "val/ not read" in capsys.readouterr().err
    # training/ + validation/ are splits too.
    make_labelled(tmp_path / "t" / "training", per_class=2)
    save_image(tmp_path / "t" / "validation" / "emu" / "a.png", (32, 32), (1, 2, 3))
    assert load_images(f"folder:{tmp_path / 't'}", "train").classes == ["cat", "dog", "emu"]
    assert load_images(f"folder:{tmp_path / 't'}", "test").labels.tolist() == [2]


def test_folder_with_only_train_is_read_as_labelled_data(tmp_path: Path, capsys) -> None:
    make_labelled(tmp_path / "d" / "train")
    train = load_images(f"folder:{tmp_path / 'd'}", "train")
    test = load_images(f"folder:{tmp_path / 'd'}", "test")
    assert train.classes == ["cat", "dog", "emu"] and len(train) + len(test) == 15
    assert "holds only train/" in capsys.readouterr().err
    # A class named "train" among others stays a class (CIFAR-100 has one).
    save_image(tmp_path / "v" / "train" / "a.png", (8, 8), (1, 2, 3))
    save_image(tmp_path / "v" / "bus" / "a.png", (8, 8), (1, 2, 3))
    assert load_images(f"folder:{tmp_path / 'v'}").classes == ["bus", "train"]


def test_folder_class_folders_of_sub_folders_are_named(tmp_path: Path, capsys) -> None:
    make_labelled(tmp_path / "one" / "images")
    with pytest.raises(DataError, match=r"only folder in .*images/.*\(cat, dog, emu\)"):
        load_images(f"folder:{tmp_path / 'one'}")
    save_image(tmp_path / "two" / "cat" / "2019" / "a.png", (8, 8), (1, 2, 3))
    save_image(tmp_path / "two" / "dog" / "b.png", (8, 8), (1, 2, 3))
    assert load_images(f"folder:{tmp_path / 'two'}").classes == ["cat", "dog"]
    assert "sub-folders (2019) all get the label 'cat'" in capsys.readouterr().err


def test_folder_empty_class_folders_are_left_out(tmp_path: Path, capsys) -> None:
    root = make_labelled(tmp_path / "imgs")
    (root / "bee").mkdir()
    train = load_images(f"folder:{root}", "train")
    assert train.classes == ["cat", "dog", "emu"] and set(train.labels.tolist()) == {0, 1, 2}
    assert "without images left out: bee" in capsys.readouterr().err


def test_folder_holdout_names_classes_too_small_for_it(tmp_path: Path, capsys) -> None:
    for name, count in (("big", 10), ("mid", 5), ("one", 1), ("two", 2)):
        for i in range(count):
            save_image(tmp_path / "d" / name / f"{i}.png", (8, 8), (i, 0, 0))
    test = load_images(f"folder:{tmp_path / 'd'}", "test")
    assert sorted(set(test.labels.tolist())) == [0, 1]
    err = capsys.readouterr().err
    assert "one (1 image), two (2 images)" in err and "no test images" in err
    # With a single class left in the test part every method would score 1.0: refused.
    for name in ("mid",):
        for path in (tmp_path / "d" / name).iterdir():
            path.unlink()
    with pytest.raises(DataError, match=r"holds only class big.*one \(1 image\)") as error:
        load_images(f"folder:{tmp_path / 'd'}", "test")
    assert "\n" not in str(error.value)
    load_images(f"folder:{tmp_path / 'd'}", "train")  # pretraining does not need the test part


def test_folder_spec_naming_a_file_and_os_junk_files(tmp_path: Path) -> None:
    save_image(tmp_path / "flat" / "a.png", (8, 8), (1, 2, 3))
    with pytest.raises(DataError, match=r"a\.png is a file, not a directory"):
        load_images(f"folder:{tmp_path / 'flat' / 'a.png'}")
    for junk in ("Thumbs.db", "desktop.ini", "._a.png"):
        (tmp_path / "flat" / junk).write_bytes(b"\0")
    assert len(load_images(f"folder:{tmp_path / 'flat'}")) == 1


def test_load_image_turns_exif_orientation_upright(tmp_path: Path) -> None:
    stored = Image.new("RGB", (20, 10), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 10, 10))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: the left half on top
    stored.save(tmp_path / "photo.png", exif=exif)
    pixels = load_image(tmp_path / "photo.png", 8)
    assert pixels[0, 0].min() > 240 and pixels[2, -1].min() > 240  # red top row, blue bottom
    stored.save(tmp_path / "plain.png")
    plain = load_image(tmp_path / "plain.png", 8)
    assert plain[0, :, 0].min() > 240 and plain[2, :, -1].min() > 240  # red left, blue right


def test_load_image_scales_16_bit_and_float_images(tmp_path: Path) -> None:
    ramp = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    Image.fromarray((ramp * 65535).astype(np.uint16)).save(tmp_path / "g16.png")
    Image.fromarray(ramp.astype(np.float32), "F").save(tmp_path / "f.tif")
    Image.fromarray((ramp * 65535).astype(np.int32)).save(tmp_path / "i32.tif")  # mode "I"
    Image.fromarray((ramp * 255).round().astype(np.uint8)).save(tmp_path / "g8.png")
    reference = load_image(tmp_path / "g8.png", 64).float()
    for name in ("g16.png", "f.tif", "i32.tif"):
        pixels = load_image(tmp_path / name, 64).float()
        assert (pixels - reference).abs().max() <= 1, name
    Image.fromarray((ramp * 1000).astype(np.float32), "F").save(tmp_path / "f1000.tif")
    with pytest.raises(DataError, match=r"f1000\.tif holds float pixels from 0\.0 to 1000"):
        load_image(tmp_path / "f1000.tif", 8)
    Image.fromarray(np.full((8, 8), 70000, np.int32)).save(tmp_path / "big.tif")
    with pytest.raises(DataError, match=r"big\.tif holds integer pixels from 70000 to 70000"):
        load_image(tmp_path / "big.tif", 8)


def test_channel_conversion_copies_gray_and_takes_luma_of_rgb():
    gray = torch.tensor([[[[0, 100], [200, 255]]]], dtype=torch.uint8)
    rgb = convert_channels(gray, 3)
    assert rgb.shape == (1, 3, 2, 2) and (rgb == gray).all()
    assert torch.equal(convert_channels(rgb, 1), gray)  # luma of a gray RGB image is itself
    red = torch.zeros(1, 3, 1, 1, dtype=torch.uint8)
    red[:, 0] = 255
    assert convert_channels(red, 1).item() == 76  # 0.299 * 255, rounded
    lazy = ChannelConvertedDataset(TensorImageDataset(rgb), 1)
    assert lazy.image_shape == (1, 2, 2)
    assert torch.equal(lazy[0][0], gray[0]) and torch.equal(lazy.get_batch(torch.tensor([0])), gray)


def test_match_channels_converts_clips_and_keeps_their_labels():
    from selfsup.data.video import VideoDataset
    from selfsup.recipe import match_channels

    clips = torch.randint(0, 256, (2, 3, 1, 8, 8), dtype=torch.uint8)
    labels = torch.tensor([[1, 0], [0, 1]])
    video = match_channels(VideoDataset(clips, labels), 3)
    assert isinstance(video, VideoDataset) and video.clips.shape == (2, 3, 3, 8, 8)
    assert torch.equal(video.clips[:, :, 2], clips[:, :, 0]) and video.clip_labels is labels
    with pytest.raises(SelfSupError, match="only gray"):
        match_channels(TensorImageDataset(torch.zeros(1, 2, 4, 4, dtype=torch.uint8)), 3)
