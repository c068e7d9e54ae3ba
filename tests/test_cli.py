"""The command line end to end on small real data, and its one-line errors."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import selfsup
from selfsup.cli import main
from selfsup.errors import SelfSupError

TINY = [
    "--set",
    "backbone_options.width=8",
    "--batch-size",
    "32",
    "--num-workers",
    "0",
    "--no-progress",
]


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_path_does_not_import_torch():
    """`selfsup --help` answers at once because the CLI imports torch only inside commands."""
    code = "import sys, selfsup.cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False"


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"selfsup {selfsup.__version__}"


def test_tasks_lists_every_task_with_a_description(capsys):
    code, out, _ = run_cli(capsys, "tasks")
    assert code == 0
    assert "simclr" in out and "rotation" in out and "NT-Xent" in out


def test_pretrain_evaluate_embed_and_load_backbone(tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = run_cli(
        capsys,
        "pretrain",
        "--task",
        "rotation",
        "--data",
        "digits",
        "--steps",
        "4",
        "--out",
        str(run),
        *TINY,
    )
    assert code == 0, err
    assert "next: selfsup evaluate" in out
    # --resume keeps the recorded recipe: a flag that would change it is refused, not ignored.
    code, _, err = run_cli(capsys, "pretrain", "--resume", str(run), "--steps", "8")
    assert code != 0 and "drop --steps" in err
    code, out, _ = run_cli(capsys, "pretrain", "--resume", str(run), "--no-progress")
    assert code == 0 and "already complete (4 steps)" in out

    code, out, err = run_cli(
        capsys,
        "evaluate",
        str(run),
        "--labels",
        "10%",
        "--protocol",
        "knn,linear,finetune",
        "--baselines",
        "raw",
        "--no-progress",
    )
    assert code == 0, err
    results = json.loads((run / "metrics.json").read_text())
    protocols = {(r["method"], r["protocol"]) for r in results["rows"]}
    assert {("ssl", "knn"), ("ssl", "linear"), ("ssl", "finetune"), ("raw", "knn")} <= protocols
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in results["rows"])
    for name in ("report.md", "label_efficiency.png", "loss_curve.png", "neighbors.png"):
        assert (run / name).stat().st_size > 0, name
    assert "SSL linear probe" in out

    code, out, err = run_cli(
        capsys, "evaluate", str(run), "--labels", "10%", "--protocol", "finetune",
        "--baselines", "none", "--rescale",
    )  # fmt: skip
    assert code == 0, err
    assert "fine-tuning rescales 4 convolutions" in out and "SSL fine-tune" in out
    # Options of fine-tuning without fine-tuning, or beyond the backbone, fail before any work.
    code, _, err = run_cli(capsys, "evaluate", str(run), "--freeze-stages", "2")
    assert code != 0 and "add finetune to --protocol" in err
    code, _, err = run_cli(
        capsys, "evaluate", str(run), "--protocol", "knn,finetune", "--freeze-stages", "9"
    )
    assert code != 0 and "only 4 stages" in err and "accuracy" not in err  # no kNN row ran

    code, _, err = run_cli(
        capsys,
        "embed",
        str(run),
        "--data",
        "digits",
        "--split",
        "test",
        "--out",
        str(tmp_path / "features.npy"),
    )
    assert code == 0, err
    features = np.load(tmp_path / "features.npy")
    assert features.shape[0] == 450 and features.dtype == np.float32

    backbone = selfsup.load_backbone(run / "backbone")
    images = torch.rand(2, 1, 8, 8)
    assert backbone(images).shape == (2, backbone.feature_dim)


def _write_folder(root, classes=("cats", "dogs"), per_class=20):
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 80, (20, 24, 3), dtype=np.uint8)
            pixels[..., c] += 150  # class = dominant colour channel
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def test_image_folder_trains_through_dataloader_workers(tmp_path, capsys):
    _write_folder(tmp_path / "images")
    run = tmp_path / "run"
    code, _, err = run_cli(
        capsys,
        "pretrain",
        "--task",
        "simclr",
        "--data",
        f"folder:{tmp_path / 'images'}",
        "--image-size",
        "16",
        "--steps",
        "3",
        "--out",
        str(run),
        "--set",
        "backbone_options.width=8",
        "--batch-size",
        "8",
        "--num-workers",
        "1",
        "--no-progress",
    )
    assert code == 0, err
    code, _, err = run_cli(
        capsys, "evaluate", str(run), "--labels", "100%", "--baselines", "raw", "--no-progress"
    )
    assert code == 0, err
    rows = json.loads((run / "metrics.json").read_text())["rows"]
    assert next(r for r in rows if r["method"] == "raw")["accuracy"] > 0.9  # colour separates

    # Transfer across channel counts: the RGB backbone reads gray digits copied to R, G and B.
    code, _, err = run_cli(
        capsys, "evaluate", str(run), "--data", "digits", "--labels", "10%",
        "--protocol", "knn", "--baselines", "none", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert "converting the gray images of digits" in err


def test_a_bad_file_found_mid_run_keeps_the_steps_done(tmp_path, capsys):
    """A file that cannot be decoded stops the run in one line when its batch comes up; the
    steps before it are saved, and --resume goes on once the file is fixed."""
    from selfsup.data import load_images
    from selfsup.engine import BatchOrder

    root = tmp_path / "images"
    _write_folder(root)
    paths = load_images(f"folder:{root}", "train", image_size=16).paths
    order = BatchOrder(len(paths), batch_size=8, seed=0)
    earlier = set(order.indices(0).tolist()) | set(order.indices(1).tolist())
    victim = Path(paths[next(i for i in order.indices(2).tolist() if i not in earlier)])
    good = victim.read_bytes()
    victim.write_bytes(b"not a png")

    run = tmp_path / "run"
    args = [
        "pretrain", "--task", "rotation", "--data", f"folder:{root}", "--image-size", "16",
        "--steps", "4", "--set", "backbone_options.width=8", "--batch-size", "8",
        "--num-workers", "1", "--no-progress", "--out", str(run),
    ]  # fmt: skip
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    assert f"{victim} could not be decoded" in err and "saved at step 2" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == 2

    victim.write_bytes(good)
    code, _, err = run_cli(capsys, "pretrain", "--resume", str(run), "--no-progress")
    assert code == 0, err
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 4


def test_gray_backbone_embeds_rgb_folder(tmp_path, capsys):
    """A backbone pretrained on gray digits embeds a folder of RGB files (read lazily) as
    their luma instead of failing on the channel count."""
    _write_folder(tmp_path / "images", per_class=3)
    run = tmp_path / "run"
    code, _, err = run_cli(
        capsys, "pretrain", "--task", "rotation", "--data", "digits", "--steps", "2",
        "--out", str(run), *TINY,
    )  # fmt: skip
    assert code == 0, err
    out = tmp_path / "features.npy"
    code, printed, err = run_cli(
        capsys, "embed", str(run), "--data", f"folder:{tmp_path / 'images'}", "--out", str(out)
    )
    assert code == 0, err
    # Every image: 2 classes x 3, one per class held out as the test split, which comes last;
    # width 8: 64-d features. The rows file names each row's split, class and file.
    assert np.load(out).shape == (6, 64) and "(4 train, 2 test rows)" in printed
    rows = [line.split("\t") for line in (tmp_path / "features.rows.tsv").read_text().splitlines()]
    assert rows[0] == ["split", "index", "label", "file"] and len(rows) == 7
    assert [r[0] for r in rows[1:]] == ["train"] * 4 + ["test"] * 2
    assert {r[2] for r in rows[1:]} == {"cats", "dogs"}
    assert all(Path(r[3]).parent.name == r[2] for r in rows[1:])  # the file is in its class

    # A flat folder is all train: --split all gives every image, --split test says why not.
    flat = tmp_path / "flat"
    flat.mkdir()
    for image in (tmp_path / "images" / "cats").iterdir():
        (flat / image.name).write_bytes(image.read_bytes())
    code, printed, err = run_cli(
        capsys, "embed", str(run), "--data", f"folder:{flat}", "--out", str(tmp_path / "flat.npy")
    )
    assert code == 0 and "(3 train rows)" in printed, err
    code, _, err = run_cli(
        capsys, "embed", str(run), "--data", f"folder:{flat}", "--split", "test",
        "--out", str(tmp_path / "none.npy"),
    )  # fmt: skip
    assert code == 2 and "flat folder" in err and not (tmp_path / "none.npy").exists()


def _truncated_gz(directory):
    directory.mkdir()
    data = gzip.compress(b"\x00\x00\x08\x03" + bytes(16) + bytes(784 * 10))
    (directory / "train-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 2])
    (directory / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + bytes(10))
    )
    return f"fashion-mnist:{directory}"


def _empty_folder(directory):
    directory.mkdir()
    return f"folder:{directory}"


def _not_an_image(directory):
    directory.mkdir()
    (directory / "notes.txt").write_text("hello")
    return f"folder:{directory}"


@pytest.mark.parametrize(
    ("make_spec", "expected"),
    [
        (lambda d: f"mnist:{d / 'missing'}", "missing"),
        (_truncated_gz, "train-images-idx3-ubyte.gz"),
        (_empty_folder, "no images"),
        (_not_an_image, "notes.txt"),
        (lambda d: "imagenet:/data", "fashion-mnist"),
    ],
)
def test_bad_data_gives_one_line_error_and_no_output(tmp_path, capsys, make_spec, expected):
    spec = make_spec(tmp_path / "data")
    out = tmp_path / "run"
    code, _, err = run_cli(
        capsys, "pretrain", "--data", spec, "--steps", "2", "--out", str(out), *TINY
    )
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("selfsup: error:"), err
    assert expected in err
    assert not out.exists()


def test_image_task_on_text_data_says_so(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a few words of text\n")
    out = tmp_path / "r"
    code, _, err = run_cli(capsys, "pretrain", "--task", "rotation", "--data", f"text:{corpus}",
                           "--out", str(out))  # fmt: skip
    assert code == 2 and "is for images or clips, not text" in err and "mlm" in err
    assert not out.exists()


def test_unknown_task_lists_the_choices(tmp_path, capsys):
    code, _, err = run_cli(capsys, "pretrain", "--task", "rotnet", "--out", str(tmp_path / "r"))
    assert code == 2 and "rotation" in err and "simclr" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_misspelt_flag_suggests_the_right_one(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--stpes", "3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--steps" in err and err.count("\n") == 1


def test_an_interrupted_evaluation_keeps_its_finished_rows(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "pretrain", "--task", "rotation", "--data", "digits",
                           "--steps", "2", "--out", str(run), *TINY)  # fmt: skip
    assert code == 0, err
    from selfsup.evaluate import baselines

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(baselines, "supervised_from_scratch_accuracy", ctrl_c)
    command = ("evaluate", str(run), "--labels", "10%,100%", "--baselines", "raw,supervised",
               "--protocol", "linear", "--no-progress")  # fmt: skip
    code, _, err = run_cli(capsys, *command)
    assert code == 130 and "3 finished row(s) kept in" in err
    lines = (run / "evaluation_rows.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["settings"]["labels"] == [0.1, 1.0]  # what the rows depend on
    kept = [json.loads(line) for line in lines[1:]]
    assert [(r["method"], r["protocol"]) for r in kept] == [
        ("ssl", "linear"), ("raw", "knn"), ("raw", "logreg")
    ]  # fmt: skip
    assert all(r["fraction"] == 0.1 and 0 <= r["accuracy"] <= 1 for r in kept)
    monkeypatch.undo()

    # The same command again takes the finished rows as they are and measures only the rest:
    # of the four linear fits (ssl and raw, 10% and 100%), the two at 100%.
    fits = []
    probe = baselines.linear_probe_accuracy
    monkeypatch.setattr(baselines, "linear_probe_accuracy",
                        lambda x, *a, **kw: fits.append(len(x)) or probe(x, *a, **kw))  # fmt: skip
    code, _, err = run_cli(capsys, *command)
    assert code == 0, err
    assert "taking 3 row(s)" in err and len(fits) == 2
    rows = json.loads((run / "metrics.json").read_text())["rows"]
    assert [r for r in rows if r["fraction"] == 0.1][:3] == kept
    assert {(r["method"], r["fraction"]) for r in rows} >= {("supervised", 0.1), ("ssl", 1.0)}
    assert not (run / "evaluation_rows.jsonl").exists()  # complete: metrics.json has the rows
    monkeypatch.undo()

    # Other settings start over.
    monkeypatch.setattr(baselines, "supervised_from_scratch_accuracy", ctrl_c)
    assert run_cli(capsys, *command)[0] == 130
    monkeypatch.undo()
    code, _, err = run_cli(capsys, "evaluate", str(run), "--labels", "10%", "--baselines", "none",
                           "--protocol", "linear", "--no-progress")  # fmt: skip
    assert code == 0 and "taking" not in err
    assert not (run / "evaluation_rows.jsonl").exists()


def test_bad_counts_and_devices_are_refused_before_any_work(tmp_path, capsys):
    for args in (["evaluate", "runs/x", "--k", "0"], ["generate", "runs/x", "--samples", "0"]):
        with pytest.raises(SystemExit):
            main(args)
        assert "must be at least 1, got 0" in capsys.readouterr().err
    from selfsup.runs import resolve_device

    assert resolve_device("cpu") == "cpu" and resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(SelfSupError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(SelfSupError, match="no CUDA GPU is visible"):
            resolve_device("cuda:0")


def test_bad_label_fraction_is_explained(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "runs/x", "--labels", "150%"])
    assert "(0%, 100%]" in capsys.readouterr().err


def test_evaluate_a_folder_that_is_not_a_run(tmp_path, capsys):
    code, _, err = run_cli(capsys, "evaluate", str(tmp_path))
    assert code == 2 and "not a selfsup run" in err


def test_recipe_file_with_overrides(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "task: rotation\ndata: digits\nbackbone_options: {width: 8}\n"
        "train: {steps: 50, batch_size: 32, num_workers: 0}\n"
    )
    run = tmp_path / "run"
    code, _, err = run_cli(
        capsys,
        "pretrain",
        "--recipe",
        str(recipe),
        "--steps",
        "2",
        "--set",
        "train.lr=0.01",
        "--out",
        str(run),
        "--no-progress",
    )
    assert code == 0, err
    saved = (run / "run.yaml").read_text()
    assert "steps: 2" in saved and "lr: 0.01" in saved and "task: rotation" in saved

    code, _, err = run_cli(
        capsys, "pretrain", "--task", "rotation", "--set", "backbone_options={width:8}",
        "--out", str(tmp_path / "colon"),
    )  # fmt: skip
    assert code == 2 and "YAML needs a space after each colon" in err

    bad = tmp_path / "bad.yaml"
    bad.write_text("task: rotation\nepochs: 3\n")
    code, _, err = run_cli(capsys, "pretrain", "--recipe", str(bad), "--out", str(tmp_path / "b"))
    assert code == 2 and "epochs" in err


def test_view_augmentation_is_set_field_by_field(tmp_path, capsys):
    """`--set task_options.augment.FIELD=...` changes that field of the task's own views, is
    saved with the run, and a misspelt field stops the run before it starts."""
    from selfsup.recipe import build_task, load_run

    run = tmp_path / "run"
    code, _, err = run_cli(
        capsys, "pretrain", "--task", "simclr", "--data", "digits", "--steps", "2",
        "--set", "task_options.augment.crop_scale=[0.5, 1.0]", *TINY, "--out", str(run),
    )  # fmt: skip
    assert code == 0, err
    task = build_task(load_run(run), (1, 8, 8))
    assert task.augment.crop_scale == (0.5, 1.0) and task.augment.gray_p == 0.2

    code, _, err = run_cli(
        capsys, "pretrain", "--task", "pirl", "--data", "digits", "--steps", "2",
        "--set", "task_options.augment.blur=0.5", *TINY, "--out", str(tmp_path / "bad"),
    )  # fmt: skip
    assert code == 2 and "unknown field(s) blur; valid: crop_scale" in err
    assert not (tmp_path / "bad" / "backbone").exists()


def test_every_listed_task_imports_and_is_a_task():
    from selfsup.tasks import TASKS, task_class
    from selfsup.tasks.base import Task

    for name in TASKS:
        cls = task_class(name)
        assert issubclass(cls, Task) and cls.name == name, name


@pytest.mark.parametrize(
    "setting, expected",
    [
        ("train.steps=abc", "train.steps must be a whole number, got 'abc'"),
        ("train.steps=2.5", "train.steps must be a whole number, got 2.5"),
        ("train.batch_size=4.7", "train.batch_size must be a whole number, got 4.7"),
        ("train.seed=abc", "train.seed must be a whole number, got 'abc'"),
        ("train.seed=true", "train.seed must be a whole number, got True"),
        ("train.lr=abc", "train.lr must be a number or null, got 'abc'"),
        ("image_size=abc", "image_size must be a whole number or null, got 'abc'"),
        ("train.num_workers=-1", "num_workers must be 0 (load in this process) or more, got -1"),
        ("train.warmup_steps=5", "warmup_steps (5) is more than steps (2)"),
        ("train=3", "train must be a mapping"),
        (
            "evaluate.protocl=knn",
            "unknown evaluate option(s) protocl for an image run; valid: data",
        ),
        ("backbone=transformer", "backbone transformer is for the text tasks"),
        ("backbone=word_vectors", "use one of small_cnn, resnet18, resnet50, vit_tiny"),
    ],
)
def test_bad_recipe_values_are_one_line_errors_before_any_output(
    tmp_path, capsys, setting, expected
):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "pretrain", "--task", "simclr", "--data", "digits",
                           "--set", "train.steps=2", "--set", setting,
                           "--out", str(out))  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and err.startswith("selfsup: error:"), err
    assert expected in err
    assert not out.exists()


def test_scientific_notation_in_set_trains(tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "pretrain", "--task", "simclr", "--data", "digits", "--steps",
                           "2", "--set", "train.lr=1e-3", "--set", "train.weight_decay=5e-4",
                           "--set", "task_options.temperature=1e-1", *TINY,
                           "--out", str(run))  # fmt: skip
    assert code == 0, err
    from selfsup.recipe import load_run

    recipe = load_run(run)
    assert recipe.train["lr"] == 0.001 and recipe.train["weight_decay"] == 0.0005
    assert recipe.task_options["temperature"] == 0.1


def test_accelerator_cuda_without_a_gpu_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "gpu"):
        code, _, err = run_cli(capsys, "pretrain", "--task", "simclr", "--data", "digits",
                               "--accelerator", name, "--out", str(tmp_path / "r"))  # fmt: skip
        assert code == 2 and err.count("\n") == 1, err
        assert f"accelerator {name}, but no CUDA GPU is visible; drop" in err
        assert not (tmp_path / "r").exists()


def test_flag_and_set_of_the_same_key_conflict(tmp_path, capsys):
    for args in (["--steps", "2", "--set", "train.steps=3"], ["--steps", "2", "--set", "train={}"],
                 ["--task", "rotation", "--set", "task=simclr"]):  # fmt: skip
        code, _, err = run_cli(capsys, "pretrain", "--data", "digits", *args,
                               "--out", str(tmp_path / "r"))  # fmt: skip
        assert code == 2 and "give it once" in err and args[0] in err, err
        assert not (tmp_path / "r").exists()


def test_a_chosen_image_backbone_for_a_text_task_is_refused(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a few words of text\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"task: mlm\ndata: text:{corpus}\nbackbone: small_cnn\n")
    for args in (["--task", "mlm", "--data", f"text:{corpus}", "--backbone", "small_cnn"],
                 ["--recipe", str(recipe)]):  # fmt: skip
        code, _, err = run_cli(capsys, "pretrain", *args, "--out", str(tmp_path / "r"))
        assert code == 2 and "task mlm learns from text and needs a text backbone" in err, err
        assert "got small_cnn" in err and "default, transformer" in err
        assert not (tmp_path / "r").exists()
    code, _, err = run_cli(capsys, "pretrain", "--task", "clm", "--data", f"text:{corpus}",
                           "--backbone", "vit_tiny", "--out", str(tmp_path / "r"))  # fmt: skip
    assert code == 2 and "task clm learns from text and needs a text backbone" in err, err
    # From Python too: a named small_cnn is refused, not swapped for the text backbone.
    from selfsup.recipe import Recipe
    from selfsup.runs import pretrain_run

    with pytest.raises(SelfSupError, match="got small_cnn"):
        pretrain_run(Recipe(task="mlm", data=f"text:{corpus}", backbone="small_cnn"),
                     tmp_path / "r")  # fmt: skip
    assert not (tmp_path / "r").exists()


def test_out_paths_of_the_wrong_kind_are_one_line_errors(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("")
    code, _, err = run_cli(capsys, "pretrain", "--task", "simclr", "--data", "digits",
                           "--out", str(a_file))  # fmt: skip
    assert code == 2 and "is a file; give a directory" in err, err

    from selfsup.recipe import Recipe, save_recipe

    run = tmp_path / "run"
    save_recipe(Recipe(task="rotation"), run)  # enough of a run for the checks before the work
    code, _, err = run_cli(capsys, "embed", str(run), "--data", "digits", "--out", str(tmp_path))
    assert code == 2 and "is a directory; give the .npy file" in err, err
    code, _, err = run_cli(capsys, "generate", str(run))
    assert code == 2 and "is a rotation run, not a clm run" in err, err


def test_resume_names_run_yaml_and_takes_workers_and_accelerator(tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "pretrain", "--task", "rotation", "--data", "digits",
                           "--steps", "2", "--out", str(run), *TINY)  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli(capsys, "pretrain", "--resume", str(run), "--steps", "3")
    assert code == 2 and "exactly as its run.yaml records it; drop --steps" in err, err
    code, _, err = run_cli(capsys, "pretrain", "--resume", str(run), "--precision", "bf16-mixed")
    assert code == 2 and "drop --precision" in err, err  # precision changes the numbers
    code, out, err = run_cli(capsys, "pretrain", "--resume", str(run), "--num-workers", "1",
                             "--accelerator", "cpu", "--no-progress")  # fmt: skip
    assert code == 0 and "already complete (2 steps)" in out, err
    assert "not bit-identical" in err  # recorded auto, now cpu
