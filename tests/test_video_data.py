"""Moving MNIST, the video:DIR source, clips in every batch and window sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.data import load_images
from selfsup.data.idx import load_idx_dataset
from selfsup.data.moving_mnist import DIGIT, moving_mnist_clip
from selfsup.data.video import VideoDataset, sample_windows
from selfsup.errors import DataError, SelfSupError


@pytest.fixture(scope="module")
def mnist(shared_data):
    data = load_idx_dataset(shared_data / "mnist", "test")
    return data.images[:2000, 0].numpy(), data.labels[:2000].numpy()


def test_generator_is_a_pure_function_of_seed_and_index(mnist):
    images, labels = mnist
    a = moving_mnist_clip(images, labels, 3, 17)
    b = moving_mnist_clip(images, labels, 3, 17)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.digits, b.digits)
    assert not np.array_equal(a.frames, moving_mnist_clip(images, labels, 4, 17).frames)
    assert not np.array_equal(a.frames, moving_mnist_clip(images, labels, 3, 18).frames)
    assert a.frames.shape == (20, 64, 64) and a.frames.dtype == np.uint8
    assert len(set(a.digits.tolist())) == 2  # two different digits: a label set of two


def test_digits_stay_inside_the_frame_and_move(mnist):
    images, labels = mnist
    for index in range(40):
        clip = moving_mnist_clip(images, labels, 0, index, frames=30, num_digits=1)
        assert clip.positions.min() >= 0 and clip.positions.max() <= 64 - DIGIT
        # Alone in the frame, the whole digit is drawn in every frame: no ink is cut off.
        digit = images[np.flatnonzero(labels == clip.digits[0])]
        ink = clip.frames.reshape(30, -1).sum(1, dtype=np.int64)
        assert (ink == ink[0]).all() and ink[0] in digit.reshape(len(digit), -1).sum(1)
        assert (np.abs(np.diff(clip.positions[0], axis=0)).sum(1) > 0).mean() > 0.8


def _turn(before: np.ndarray, after: np.ndarray) -> int:
    """The whole degrees (-20..20) that best turn image `before` into `after`."""
    image = Image.fromarray(before)
    errors = [
        np.abs(np.asarray(image.rotate(a, Image.BILINEAR), float) - after).mean()
        for a in range(-20, 21)
    ]
    return int(np.argmin(errors)) - 20


def test_spinning_digits_turn_along_the_same_paths(mnist, shared_data):
    images, labels = mnist
    still = moving_mnist_clip(images, labels, 0, 5, num_digits=1)
    spinning = moving_mnist_clip(images, labels, 0, 5, num_digits=1, spin=12)
    assert np.array_equal(spinning.positions, still.positions)  # spin draws after the paths
    assert np.array_equal(spinning.digits, still.digits)
    # Each frame shows the digit at its place, turned by 6 to 12 degrees more than the last.
    frames, places = spinning.frames, still.positions[0]
    crops = [f[r : r + DIGIT, c : c + DIGIT] for f, (r, c) in zip(frames, places, strict=True)]
    turns = [_turn(before, after) for before, after in zip(crops[:-1], crops[1:], strict=True)]
    assert 6 <= abs(np.median(turns)) <= 12 and len(set(np.sign(turns))) == 1
    spec = f"moving-mnist:{shared_data / 'mnist'}?clips=4&frames=6"
    upright, turned = load_images(spec, "train"), load_images(spec + "&spin=12", "train")
    assert not torch.equal(upright.clips, turned.clips)
    assert torch.equal(upright.clip_labels, turned.clip_labels)


def test_still_digits_stay_at_the_start_of_their_path_and_only_turn(mnist):
    images, labels = mnist
    moving = moving_mnist_clip(images, labels, 0, 5, spin=12)
    still = moving_mnist_clip(images, labels, 0, 5, spin=12, still=True)
    assert np.array_equal(still.digits, moving.digits)
    # Every frame keeps each digit's first place on its path (the same draws either way) ...
    assert (still.positions == moving.positions[:, :1]).all()
    # ... and from there it shows what the moving clip shows: the same digits, turned alike.
    assert np.array_equal(still.frames[0], moving.frames[0])
    assert not np.array_equal(still.frames[0], still.frames[-1])
    quiet = moving_mnist_clip(images, labels, 0, 5, still=True)
    assert (quiet.frames == quiet.frames[0]).all()  # no spin, no motion: nothing changes


def test_moving_mnist_spec_gives_clips_with_multi_hot_labels(shared_data):
    spec = f"moving-mnist:{shared_data / 'mnist'}?clips=12&frames=8"
    train = load_images(spec, "train", image_size=32)
    test = load_images(spec, "test")
    assert isinstance(train, VideoDataset)
    assert train.clips.shape == (12, 8, 1, 32, 32) and test.clips.shape == (3, 8, 1, 64, 64)
    assert len(train) == 12 * 8 and train.image_shape == (1, 32, 32)
    assert (train.clip_labels.sum(1) == 2).all() and train.clip_labels.shape == (12, 10)
    again = load_images(spec, "train", image_size=32)
    assert torch.equal(train.clips, again.clips)  # regenerated, identical


def test_every_batch_carries_the_clip_and_a_partner_frame_of_it(shared_data):
    data = load_images(f"moving-mnist:{shared_data / 'mnist'}?clips=6&frames=5", "train")
    frames = torch.tensor([0, 4, 7, 29])
    torch.manual_seed(0)
    extras = data.extras(frames)
    assert extras["clips"].shape == (4, 5, 1, 64, 64)
    assert extras["groups"].tolist() == [0, 0, 1, 5]
    for i, f in enumerate(frames.tolist()):
        clip = extras["clips"][i]
        assert torch.equal(clip[f % 5], data.images[f])  # the frame lies in its clip
        matches = [t for t in range(5) if torch.equal(clip[t], extras["partners"][i])]
        assert matches and f % 5 not in matches  # another frame of the same clip


def test_sample_windows_takes_length_frames_stride_apart():
    clips = torch.arange(3 * 12).view(3, 12, 1, 1, 1).float()
    torch.manual_seed(0)
    windows, index = sample_windows(clips, 4, 3)
    assert windows.shape == (3, 4, 1, 1, 1)
    assert (index.diff(dim=1) == 3).all() and index.min() >= 0 and index.max() < 12
    assert torch.equal(windows.flatten(1), index.float() + 12 * torch.arange(3)[:, None])
    with pytest.raises(SelfSupError, match="needs 13 frames"):
        sample_windows(clips, 5, 3)


def test_video_source_reads_npy_arrays_and_frame_folders(tmp_path):
    arrays = tmp_path / "npy"
    arrays.mkdir()
    np.save(arrays / "a.npy", np.random.default_rng(0).integers(0, 255, (10, 16, 16), np.uint8))
    np.save(arrays / "b.npy", np.random.default_rng(1).random((6, 16, 16, 3)) < 0.5)
    with pytest.raises(DataError, match=r"mixes gray and colour clips \(gray: a\.npy, colour: b"):
        load_images(f"video:{arrays}", "train")
    (arrays / "b.npy").unlink()
    data = load_images(f"video:{arrays}?length=4&stride=2", "train", image_size=8)
    # 10 frames hold one window of 4 frames 2 apart (7 frames long): one clip.
    assert data.clips.shape == (1, 4, 1, 8, 8) and data.clip_labels is None

    folders = tmp_path / "frames"
    for clip in ("c1", "c2"):
        (folders / clip).mkdir(parents=True)
        for t in range(5):
            Image.new("RGB", (20, 20), (t * 40, 0, 0)).save(folders / clip / f"{t:03d}.png")
    data = load_images(f"video:{folders}?length=5", "train", image_size=16)
    assert data.clips.shape == (2, 5, 3, 16, 16)
    assert data.clips[0, :, 0, 0, 0].tolist() == [0, 40, 80, 120, 160]  # frames in name order


def test_frames_and_clips_numbered_without_padding_keep_their_order(tmp_path):
    for clip in (2, 10):
        (tmp_path / f"clip_{clip}").mkdir()
        for t in range(12):  # frame_10 would sort before frame_2 by plain name
            value = (clip * 12 + t) % 256
            Image.new("L", (8, 8), value).save(tmp_path / f"clip_{clip}" / f"frame_{t}.png")
    data = load_images(f"video:{tmp_path}?length=12", "train", image_size=8)
    assert data.clips[0, :, 0, 0, 0].tolist() == [24 + t for t in range(12)]
    assert data.clips[1, :, 0, 0, 0].tolist() == [120 + t for t in range(12)]


def test_video_names_short_clips_left_out_and_refuses_a_file(tmp_path, capsys):
    for name, frames in (("long", 8), ("short", 3), ("tiny", 2)):
        np.save(tmp_path / f"{name}.npy", np.zeros((frames, 8, 8), np.uint8))
    data = load_images(f"video:{tmp_path}?length=4", "train")
    assert data.num_clips == 2  # two clips of 4 out of the 8 frames of long.npy
    assert "2 of 3 clips" in capsys.readouterr().err
    with pytest.raises(DataError, match=r"long\.npy is a file"):
        load_images(f"video:{tmp_path / 'long.npy'}", "train")


@pytest.mark.parametrize(
    ("setup", "spec_suffix", "message"),
    [
        (lambda d: None, "?length=4", "neither .npy clips nor sub-folders"),
        (lambda d: np.save(d / "x.npy", np.zeros((2, 3, 4, 5, 6))), "", "has shape"),
        (lambda d: np.save(d / "x.npy", np.zeros((3, 8, 8))), "?length=4", "lower ?length="),
        (lambda d: None, "?frames=3", "unknown data option"),
        # 0-255 floats would all be clipped to white: refused, with the conversion to make.
        (lambda d: np.save(d / "x.npy", np.full((4, 8, 8), 200.0)), "", "floats in \\[0, 1\\]"),
        (lambda d: np.save(d / "x.npy", np.ones((4, 8, 8), np.int16)), "", "holds int16"),
        (lambda d: np.save(d / "x.npy", np.zeros((0, 8, 8))), "", "holds no frames"),
    ],
)
def test_video_source_errors_are_one_line(tmp_path, setup, spec_suffix, message):
    setup(tmp_path)
    with pytest.raises(SelfSupError, match=message.replace("?", r"\?")) as error:
        load_images(f"video:{tmp_path}{spec_suffix}", "train")
    assert "\n" not in str(error.value)


def test_moving_mnist_errors_name_the_fix(tmp_path, shared_data):
    with pytest.raises(DataError, match="does not exist"):
        load_images(f"moving-mnist:{tmp_path / 'nope'}", "train")
    with pytest.raises(SelfSupError, match="whole number"):
        load_images(f"moving-mnist:{shared_data / 'mnist'}?clips=many", "train")
    with pytest.raises(DataError, match="no test split"):
        load_images(f"video:{tmp_path}", "test")
