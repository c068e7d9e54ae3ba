"""MICLe and grouped data: partners, the grouped:PATH source and its errors, training steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.backbones import build_backbone
from selfsup.data import GroupedImageDataset, TensorImageDataset, load_images
from selfsup.errors import DataError, SelfSupError
from selfsup.recipe import Recipe
from selfsup.runs import pretrain_run
from selfsup.tasks.micle import MICLe

GROUPS = torch.tensor([5, 5, 5, 9, 9, 2, 7, 7, 7, 7])  # group 2 has a single image


def indexed_dataset(groups: torch.Tensor) -> GroupedImageDataset:
    """Image i is filled with the value i, so a partner image tells which image it is."""
    n = groups.shape[0]
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).clone()
    return GroupedImageDataset(TensorImageDataset(images), groups)


def test_partners_are_other_members_of_the_group_and_seeded():
    dataset = indexed_dataset(GROUPS)
    idx = torch.arange(len(GROUPS)).repeat(40)
    torch.manual_seed(0)
    extras = dataset.extras(idx)
    partners = extras["partners"][:, 0, 0, 0].long()  # the id written into each image
    assert torch.equal(extras["groups"], GROUPS[idx])
    assert torch.equal(GROUPS[partners], GROUPS[idx])
    single = GROUPS[idx] == 2
    assert torch.equal(partners[single], idx[single])
    assert (partners[~single] != idx[~single]).all()
    # Every other member of a group gets drawn (uniform over the other members).
    assert set(partners[idx == 6].tolist()) == {7, 8, 9}
    torch.manual_seed(0)
    assert torch.equal(dataset.extras(idx)["partners"], extras["partners"])
    torch.manual_seed(1)
    assert not torch.equal(dataset.extras(idx)["partners"], extras["partners"])


def test_group_ids_must_match_the_images():
    with pytest.raises(ValueError, match="one group id per image"):
        GroupedImageDataset(TensorImageDataset(torch.zeros(3, 1, 4, 4, dtype=torch.uint8)), GROUPS)


def write_png(path: Path, red: int, green: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((8, 8, 3), dtype=np.uint8)
    pixels[..., 0], pixels[..., 1] = red, green
    Image.fromarray(pixels).save(path)


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    """10 patients x 2 images; red = patient, green = image number; patients 0-4 'benign'."""
    lines = ["path,group,label"]
    for patient in range(10):
        for k in range(2):
            name = f"img/p{patient}_{k}.png"
            write_png(tmp_path / name, 20 * patient, 100 * k)
            lines.append(f"{name},patient{patient},{'benign' if patient < 5 else 'malignant'}")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "manifest.csv"


def test_manifest_source_reads_groups_labels_and_splits_by_group(manifest: Path):
    train = load_images(f"grouped:{manifest}", "train", image_size=8)
    test = load_images(f"grouped:{manifest}", "test", image_size=8)
    assert isinstance(train, GroupedImageDataset)
    assert train.classes == ["benign", "malignant"] and train.has_labels
    assert len(train) + len(test) == 20 and len(test) == 4  # one patient per class held out
    assert not set(train.groups.tolist()) & set(test.groups.tolist())
    images = train.get_batch(torch.arange(len(train)))
    assert images.shape == (16, 3, 8, 8)
    # The decoded colour says which patient an image shows, so its group must agree.
    names = [train.group_names[g] for g in train.groups]
    assert [f"patient{int(r) // 20}" for r in images[:, 0, 0, 0]] == names
    torch.manual_seed(0)
    partners = train.extras(torch.arange(len(train)))["partners"]
    assert torch.equal(partners[:, 0], images[:, 0])  # same patient
    assert not torch.equal(partners[:, 1], images[:, 1])  # the other image of that patient
    # The same manifest tab-separated reads the same.
    tabbed = manifest.with_suffix(".tsv")
    tabbed.write_text(manifest.read_text().replace(",", "\t"))
    again = load_images(f"grouped:{tabbed}", "train", image_size=8)
    assert torch.equal(again.groups, train.groups) and torch.equal(again.labels, train.labels)


def test_group_folder_tree_with_and_without_labels(tmp_path: Path, capsys):
    for group, count in (("a", 3), ("b", 1), ("c", 2), ("d", 2), ("e", 1), ("f", 1)):
        for k in range(count):
            write_png(tmp_path / "tree" / group / f"{k}.png", 10 * k, 0)
    tree = tmp_path / "tree"
    train = load_images(f"grouped:{tree}", "train")
    assert "3 of 6 groups" in capsys.readouterr().err  # b, e, f: their positives are views
    assert len(train) == 10 and not train.has_labels and train.image_shape == (3, 32, 32)
    assert train.group_names == ["a", "b", "c", "d", "e", "f"]
    assert train.groups.tolist() == [0, 0, 0, 1, 2, 2, 3, 3, 4, 5]
    with pytest.raises(DataError, match="no labelled test split"):
        load_images(f"grouped:{tree}", "test")
    (tree / "labels.csv").write_text("group,label\na,x\nb,y\nc,x\nd,y\ne,x\nf,y\n")
    train = load_images(f"grouped:{tree}", "train")
    test = load_images(f"grouped:{tree}", "test")
    assert train.has_labels and test.has_labels and train.classes == ["x", "y"]
    assert len(train) + len(test) == 10 and len(set(test.groups.tolist())) == 2
    assert not set(train.groups.tolist()) & set(test.groups.tolist())
    write_png(tree / "loose.png", 0, 0)
    with pytest.raises(DataError, match="outside any group folder"):
        load_images(f"grouped:{tree}", "train")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("path,group\n", "no rows"),
        ("path,patient\nimg/p0_0.png,1\n", "no 'group' column"),
        ("path,group\nimg/missing.png,1\n", "line 2: image .*missing.png not found"),
        ("path,group\nimg/p0_0.png,\n", "empty path or group"),
    ],
)
def test_bad_manifests_are_clear_errors(manifest: Path, content: str, message: str):
    bad = manifest.parent / "bad.csv"
    bad.write_text(content)
    with pytest.raises(DataError, match=message):
        load_images(f"grouped:{bad}")


def test_missing_path_is_a_clear_error(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist"):
        load_images(f"grouped:{tmp_path / 'nope.csv'}")


def _task() -> MICLe:
    torch.manual_seed(0)
    backbone = build_backbone("small_cnn", in_channels=3, image_size=8, width=8)
    return MICLe(backbone, (3, 8, 8), projection_dim=16, hidden_dim=16)


def _batch(dataset: GroupedImageDataset) -> dict[str, torch.Tensor]:
    idx = torch.arange(len(dataset))
    batch = {"images": dataset.get_batch(idx).float() / 255, "indices": idx}
    batch["partners"] = dataset.extras(idx)["partners"].float() / 255
    return batch


def test_micle_step_trains_and_refuses_ungrouped_data(manifest: Path):
    dataset = load_images(f"grouped:{manifest}", "train", image_size=8)
    torch.manual_seed(0)
    batch = _batch(dataset)
    task = _task()
    optimizer = torch.optim.Adam(task.parameters(), lr=3e-3)

    def loss_now() -> dict[str, torch.Tensor]:
        torch.manual_seed(1)  # the same augmented views each time
        return task(batch)

    logs = loss_now()
    assert torch.isfinite(logs["loss"]) and logs["distinct_pairs"] == 1.0
    before = logs["loss"].item()
    for _ in range(3):
        loss = loss_now()["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss_now()["loss"].item() < before
    with pytest.raises(SelfSupError, match="micle needs grouped data: use --data grouped:"):
        task({"images": batch["images"], "indices": batch["indices"]})


def test_pretraining_on_a_grouped_manifest_end_to_end(manifest: Path, tmp_path: Path):
    recipe = Recipe(
        task="micle",
        task_options={"projection_dim": 16},
        backbone="small_cnn",
        backbone_options={"width": 8},
        data=f"grouped:{manifest}",
        image_size=8,
        train={"steps": 2, "batch_size": 8, "log_every": 1, "num_workers": 0},
    )
    summary = pretrain_run(recipe, tmp_path / "run", progress=False)
    assert summary["steps"] == 2 and np.isfinite(summary["final_loss"])
