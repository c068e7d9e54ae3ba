"""The training loop: batches, schedule, checkpoints, exact resume, NaN and bad inputs."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from selfsup.engine import (
    CHECKPOINT,
    BatchOrder,
    TrainConfig,
    kept_checkpoint,
    load_checkpoint,
)
from selfsup.errors import Interrupted, SelfSupError
from selfsup.optim import make_optimizer
from selfsup.recipe import Recipe, load_run
from selfsup.runs import pretrain_run, run_backbone


def tiny_recipe(task: str = "simclr", steps: int = 6, **train) -> Recipe:
    return Recipe(
        task=task,
        backbone="small_cnn",
        backbone_options={"width": 8},
        data="digits",
        train={
            "steps": steps,
            "batch_size": 32,
            "log_every": 1,
            "checkpoint_every": 3,
            "num_workers": 0,
            **train,
        },
    )


def task_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / CHECKPOINT)["task"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key


def test_batch_order_covers_each_epoch_once_and_splits_ranks():
    order = BatchOrder(100, 10, seed=0)
    epoch = torch.cat([order.indices(s) for s in range(10)])
    assert sorted(epoch.tolist()) == list(range(100))
    assert not torch.equal(order.indices(0), order.indices(10))  # a new permutation per epoch
    ranks = [BatchOrder(100, 10, seed=0, rank=r, world=2) for r in range(2)]
    both = torch.cat([ranks[r].indices(s) for r in range(2) for s in range(5)])
    assert sorted(both.tolist()) == list(range(100))


def test_batch_larger_than_dataset_is_a_clear_error():
    with pytest.raises(SelfSupError, match="lower --batch-size"):
        BatchOrder(10, 32, seed=0)


@pytest.mark.parametrize("task", ["simclr", "rotation"])
def test_pretrain_writes_metrics_checkpoint_and_backbone(tmp_path, task):
    out = tmp_path / "run"
    summary = pretrain_run(tiny_recipe(task), out, progress=False)
    assert summary["steps"] == 6
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6 and all('"loss"' in line for line in lines)
    assert int(load_checkpoint(out / CHECKPOINT)["step"]) == 6
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporaries
    backbone = run_backbone(out)
    features = backbone(torch.rand(3, 1, 8, 8))
    assert features.shape == (3, backbone.feature_dim)
    assert load_run(out).task == task


def test_training_reduces_the_pretext_loss(tmp_path):
    recipe = tiny_recipe("rotation", steps=40, lr=3e-3)
    pretrain_run(recipe, tmp_path / "run", progress=False)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    import json

    losses = [json.loads(line)["loss"] for line in lines]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1


def test_interrupted_then_resumed_run_ends_with_the_same_weights(tmp_path, monkeypatch):
    pretrain_run(tiny_recipe(steps=8), tmp_path / "straight", progress=False)

    from selfsup.tasks.simclr import SimCLR

    original = SimCLR.after_optimizer_step

    def interrupt_at_5(self, step, total):
        original(self, step, total)
        if step == 4:  # Ctrl-C in the middle of the 5th step: the run stops after it
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(SimCLR, "after_optimizer_step", interrupt_at_5)
    with pytest.raises(Interrupted, match="--resume"):
        pretrain_run(tiny_recipe(steps=8), tmp_path / "resumed", progress=False)
    assert int(load_checkpoint(tmp_path / "resumed" / CHECKPOINT)["step"]) == 5
    # 16-mixed's gradient scale would be here; other precisions have no state.
    assert load_checkpoint(tmp_path / "resumed" / CHECKPOINT)["precision"] == {}
    from selfsup.cli import main  # the shell's status for Ctrl-C, though the steps were saved

    assert main(["pretrain", "--recipe", str(tmp_path / "resumed" / "run.yaml"), "--out",
                 str(tmp_path / "cli"), "--no-progress"]) == 130  # fmt: skip
    monkeypatch.setattr(SimCLR, "after_optimizer_step", original)

    pretrain_run(load_run(tmp_path / "resumed"), tmp_path / "resumed", resume=True, progress=False)
    assert_same_weights(task_weights(tmp_path / "straight"), task_weights(tmp_path / "resumed"))
    steps = [
        int(line.split('"step": ')[1].split(",")[0])
        for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(1, 9))  # no step logged twice, none lost


def test_killed_process_resumes_to_the_same_weights(tmp_path):
    """SIGKILL gives no chance to save: resume must start from the last periodic checkpoint."""
    steps = 30
    pretrain_run(
        tiny_recipe(steps=steps, checkpoint_every=2), tmp_path / "straight", progress=False
    )
    killed = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "selfsup.cli",
        "pretrain",
        "--data",
        "digits",
        "--task",
        "simclr",
        "--set",
        "backbone_options.width=8",
        "--steps",
        str(steps),
        "--batch-size",
        "32",
        "--log-every",
        "1",
        "--checkpoint-every",
        "2",
        "--num-workers",
        "0",
        "--no-progress",
        "--out",
        str(killed),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not (killed / CHECKPOINT).exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    stopped_at = int(load_checkpoint(killed / CHECKPOINT)["step"])
    assert stopped_at < steps, "the run finished before it could be killed"
    pretrain_run(load_run(killed), killed, resume=True, progress=False)
    assert_same_weights(task_weights(tmp_path / "straight"), task_weights(killed))


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    from selfsup.tasks.rotation import Rotation

    original, calls = Rotation.training_step, []

    def nan_from_the_5th_step(self, batch):
        logs = original(self, batch)
        calls.append(1)
        if len(calls) >= 5:
            logs["loss"] = logs["loss"] * float("nan")
        return logs

    monkeypatch.setattr(Rotation, "training_step", nan_from_the_5th_step)
    with pytest.raises(SelfSupError, match=r"NaN.*last good weights \(step 3\)"):
        pretrain_run(tiny_recipe("rotation", steps=8), tmp_path / "run", progress=False)
    # The checkpoint of step 3 survives, with finite weights.
    state = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert int(state["step"]) == 3
    assert all(torch.isfinite(v.float()).all() for v in state["task"].values())


def test_bad_options_fail_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    for task in ("simclr", "moco", "npid", "pirl", "colorization"):
        with pytest.raises(SelfSupError, match=f"{task}: temperature must be a number > 0, got 0"):
            zero = dataclasses.replace(tiny_recipe(task, steps=2), task_options={"temperature": 0})
            pretrain_run(zero, out)
        assert not out.exists()
    with pytest.raises(SelfSupError, match="unknown task 'nope'.*rotation"):
        pretrain_run(Recipe(task="nope"), out)
    with pytest.raises(SelfSupError, match="unknown optimizer"):
        pretrain_run(tiny_recipe(optimizer="adam2"), out)
    with pytest.raises(SelfSupError, match="fashion-mnist"):
        pretrain_run(Recipe(data="fashion-mnist:" + str(tmp_path / "missing")), out)
    assert not out.exists()


def test_existing_run_is_not_overwritten(tmp_path):
    pretrain_run(tiny_recipe(steps=3), tmp_path / "run", progress=False)
    with pytest.raises(SelfSupError, match="already holds a run"):
        pretrain_run(tiny_recipe(steps=3), tmp_path / "run", progress=False)


def test_train_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(SelfSupError, match="unknown training option"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(SelfSupError, match="precision"):
        TrainConfig(precision="8")
    with pytest.raises(SelfSupError, match="steps must be at least 1"):
        TrainConfig(steps=0)
    with pytest.raises(SelfSupError, match="momentum must be in"):
        TrainConfig(momentum=1.0)
    with pytest.raises(SelfSupError, match="batch_size must be at least 2"):
        TrainConfig(batch_size=1)  # SimCLR's loss would be 0, most tasks a batch-norm traceback
    for bad_lr in (-1.0, 0.0, float("nan")):  # torch's own error would be a traceback
        with pytest.raises(SelfSupError, match="lr must be a positive number"):
            TrainConfig(lr=bad_lr)
    with pytest.raises(SelfSupError, match="weight_decay must be 0 or more"):
        TrainConfig(weight_decay=-0.1)
    with pytest.raises(SelfSupError, match="warmup_steps must be 0 or more"):
        TrainConfig(warmup_steps=-5)
    with pytest.raises(SelfSupError, match=r"warmup_steps \(11\) is more than steps \(10\)"):
        TrainConfig(steps=10, warmup_steps=11)
    TrainConfig(steps=10, warmup_steps=10)
    with pytest.raises(SelfSupError, match="num_workers must be 0"):
        TrainConfig(num_workers=-1)
    with pytest.raises(SelfSupError, match="unknown accelerator 'tpu2'"):
        TrainConfig(accelerator="tpu2")


@pytest.mark.parametrize(
    "values, message",
    [
        ({"steps": "abc"}, "train.steps must be a whole number, got 'abc'"),
        ({"steps": 2.5}, "train.steps must be a whole number, got 2.5"),
        ({"batch_size": 4.7}, "train.batch_size must be a whole number, got 4.7"),
        ({"seed": True}, "train.seed must be a whole number, got True"),
        ({"lr": "abc"}, "train.lr must be a number or null, got 'abc'"),
        ({"weight_decay": False}, "train.weight_decay must be a number, got False"),
        ({"optimizer": 3}, "train.optimizer must be a string, got 3"),
        ({"channels_last": "yes please"}, "train.channels_last must be true or false or null"),
    ],
)
def test_train_config_refuses_values_of_the_wrong_type(values, message):
    with pytest.raises(SelfSupError) as error:
        TrainConfig.from_dict(values)
    assert str(error.value).startswith(message)


def test_train_config_takes_ints_for_floats_and_yaml_precision():
    config = TrainConfig(lr=1, weight_decay=0, momentum=0, precision=32)
    assert config.lr == 1 and config.precision == "32"


def test_accelerator_cuda_without_a_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "gpu"):
        with pytest.raises(SelfSupError, match=f"accelerator {name}, but no CUDA GPU is visible"):
            TrainConfig(accelerator=name)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(SelfSupError, match="accelerator mps, but Apple's MPS is not available"):
        TrainConfig(accelerator="mps")
    TrainConfig(accelerator="auto")


def test_keep_every_keeps_the_checkpoints_of_those_steps(tmp_path):
    run = tmp_path / "kept"
    pretrain_run(tiny_recipe("rotation", steps=6, keep_every=3), run, progress=False)
    kept = sorted(p.name for p in (run / "checkpoints").glob("step_*.pt"))
    assert kept == [Path(kept_checkpoint(3)).name, Path(kept_checkpoint(6)).name]
    assert load_checkpoint(run / kept_checkpoint(3))["step"] == 3
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            load_checkpoint(run / kept_checkpoint(6))["task"].values(),
            task_weights(run).values(),
            strict=True,
        )
    )
    with pytest.raises(SelfSupError, match="multiple of checkpoint_every"):
        TrainConfig(checkpoint_every=3, keep_every=4)


def test_kill_while_keeping_a_checkpoint_leaves_no_truncated_copy(tmp_path, monkeypatch):
    """A kill mid-copy left a truncated step_N.pt that nothing rewrote; one after last.pt's
    rename but before the copy left none. Both are mended: copy via a temporary name, and
    --resume keeps the checkpoint it starts from if its copy is missing."""
    import shutil

    from selfsup import engine

    real_copy = shutil.copyfile

    def killed_mid_copy(src, dst):
        Path(dst).write_bytes(Path(src).read_bytes()[:100])  # the first bytes, then the kill
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.shutil, "copyfile", killed_mid_copy)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        pretrain_run(tiny_recipe("rotation", steps=6, keep_every=3), run, progress=False)
    assert int(load_checkpoint(run / CHECKPOINT)["step"]) == 3
    assert not (run / kept_checkpoint(3)).exists()  # nothing truncated under the final name
    monkeypatch.setattr(engine.shutil, "copyfile", real_copy)
    pretrain_run(load_run(run), run, resume=True, progress=False)
    assert load_checkpoint(run / kept_checkpoint(3))["step"] == 3
    assert load_checkpoint(run / kept_checkpoint(6))["step"] == 6


@pytest.mark.parametrize("emptied", [False, True])
def test_resume_with_a_run_yaml_that_no_longer_matches_is_refused(tmp_path, emptied):
    """An edited run.yaml once resumed silently with other steps and batches on top of a
    checkpoint laid out for the recorded ones; one a crash emptied stood for the defaults
    (SimCLR on digits) in resume, evaluate and embed alike."""
    from selfsup.cli import main
    from selfsup.runs import evaluate_run

    run = tmp_path / "run"
    pretrain_run(tiny_recipe(steps=6, checkpoint_every=2), run, progress=False)
    text = (run / "run.yaml").read_text()
    assert "steps: 6" in text and "batch_size: 32" in text
    if emptied:
        (run / "run.yaml").write_text("")
        for attempt in (lambda: load_run(run), lambda: evaluate_run(run, progress=False)):
            with pytest.raises(SelfSupError, match="run.yaml lacks task, data, train: it is "
                               "damaged or was edited; put back the recipe"):  # fmt: skip
                attempt()
        assert main(["pretrain", "--resume", str(run), "--no-progress"]) == 2
        (run / "run.yaml").unlink()
        with pytest.raises(SelfSupError, match="has checkpoints but no run.yaml; put back"):
            load_run(run)
        return
    text = text.replace("steps: 6", "steps: 9").replace("size: 32", "size: 16")
    (run / "run.yaml").write_text(text)
    with pytest.raises(SelfSupError, match="saved with steps=6, batch_size=32.*now say steps=9, "
                       "batch_size=16.*put those values back in"):  # fmt: skip
        pretrain_run(load_run(run), run, resume=True, progress=False)
    assert (run / "run.yaml").read_text() == text  # not rewritten
    assert main(["pretrain", "--resume", str(run), "--no-progress"]) == 2


def test_resume_without_a_checkpoint_says_how_to_start_again(tmp_path, capsys):
    """A run killed before its first checkpoint keeps only run.yaml; --resume names the
    command that starts it again, and that command works."""
    from selfsup.cli import main

    run = tmp_path / "run"
    pretrain_run(tiny_recipe(steps=3), run, progress=False)
    (run / CHECKPOINT).unlink()
    args = ["pretrain", "--resume", str(run), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"selfsup pretrain --recipe {run / 'run.yaml'} --out {run}" in err
    assert len(err.strip().splitlines()) == 1
    command = err.split("`")[1].split()[1:]
    assert main([*command, "--no-progress"]) == 0


def test_momentum_is_adamw_beta1():
    """GAN recipes set DCGAN's Adam beta1 = 0.5 through `momentum`; the default stays 0.9."""
    model = torch.nn.Linear(3, 2)
    assert make_optimizer(model, "adamw").param_groups[0]["betas"] == (0.9, 0.999)
    dcgan = make_optimizer(model, "adamw", lr=2e-4, momentum=0.5)
    assert all(group["betas"] == (0.5, 0.999) for group in dcgan.param_groups)


@pytest.mark.parametrize("optimizer", ["sgd", "lars", "adamw"])
def test_each_optimizer_trains(tmp_path, optimizer):
    summary = pretrain_run(
        tiny_recipe("rotation", steps=3, optimizer=optimizer), tmp_path / optimizer, progress=False
    )
    assert summary["final_loss"] is not None and summary["final_loss"] == summary["final_loss"]


def test_bf16_mixed_precision_runs_on_cpu(tmp_path):
    summary = pretrain_run(
        tiny_recipe("simclr", steps=2, precision="bf16-mixed"), tmp_path / "bf16", progress=False
    )
    assert summary["steps"] == 2


def test_two_cpu_processes_ddp_pretrain(tmp_path):
    """--devices 2 launches two gloo processes through Fabric and still writes one run."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "selfsup.cli",
            "pretrain",
            "--data",
            "digits",
            "--task",
            "simclr",
            "--set",
            "backbone_options.width=8",
            "--steps",
            "3",
            "--batch-size",
            "16",
            "--devices",
            "2",
            "--accelerator",
            "cpu",
            "--num-workers",
            "0",
            "--no-progress",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(load_checkpoint(out / CHECKPOINT)["step"]) == 3
    assert result.stdout.count("pretrained simclr") == 1  # said once, by rank 0
    assert (out / "backbone" / "backbone.json").is_file()


@pytest.mark.parametrize("task", ["rotation", "npid"])
def test_resume_on_data_of_another_size(tmp_path, capsys, task):
    """Resuming on more or fewer samples goes on with a note; a memory bank (one row per
    sample) cannot, and says why in one line instead of a state-dict traceback."""
    from selfsup.data import load_images
    from selfsup.data.base import TensorImageDataset
    from selfsup.engine import pretrain
    from selfsup.recipe import build_task

    digits = load_images("digits", "train")
    recipe = tiny_recipe(task, steps=6)
    config = TrainConfig(**{**recipe.train, "steps": 3})

    def subset(n: int) -> TensorImageDataset:
        return TensorImageDataset(digits.images[:n], digits.labels[:n])

    first = build_task(recipe, digits.image_shape, 300)
    pretrain(first, subset(300), tmp_path / "run", config, progress=False)
    later = subset(400)
    again = build_task(recipe, digits.image_shape, len(later))
    config = TrainConfig(**recipe.train)
    if task == "npid":
        with pytest.raises(SelfSupError, match="began with 300 samples, the data now has 400"):
            pretrain(again, later, tmp_path / "run", config, resume=True, progress=False)
        return
    summary = pretrain(again, later, tmp_path / "run", config, resume=True, progress=False)
    assert summary["start_step"] == 3 and summary["steps"] == 6
    assert "the run began with 300 samples, the data now has 400" in capsys.readouterr().err


def test_too_small_a_dataset_names_what_it_counts():
    with pytest.raises(SelfSupError, match="has 3 sequences, fewer than one batch of 8"):
        BatchOrder(3, 8, seed=0, unit="sequences")


def test_a_damaged_export_names_the_resume_that_writes_it_again(tmp_path):
    from selfsup.backbones import load_backbone

    run = tmp_path / "run"
    pretrain_run(tiny_recipe(steps=3), run, progress=False)
    weights = run / "backbone" / "backbone.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:50])
    with pytest.raises(
        SelfSupError, match=rf"corrupt .*`selfsup pretrain --resume {re.escape(str(run))}`"
    ):
        load_backbone(run / "backbone")
    pretrain_run(load_run(run), run, resume=True, progress=False)  # already complete: exports
    assert weights.read_bytes() == good
