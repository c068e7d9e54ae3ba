"""Video pretext tasks: labels correct by construction, no peeking at the future, training
on real Moving MNIST clips, report pictures, and MICLe / SimCLR on the frames of clips."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.backbones import build_backbone
from selfsup.data import load_images
from selfsup.errors import SelfSupError
from selfsup.tasks.clips import MapReadout, read_frames
from selfsup.tasks.dpc import DensePredictiveCoding
from selfsup.tasks.frame_order import FrameOrder, order_tuples
from selfsup.tasks.future_frame import FutureFrame, split_past_future
from selfsup.tasks.odd_one_out import OddOneOut, odd_questions

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clips(shared_data) -> torch.Tensor:
    """16 real Moving MNIST test clips at 32 px as floats (16, 20, 1, 32, 32)."""
    # The test split holds clips / 4 clips.
    data = load_images(f"moving-mnist:{shared_data / 'mnist'}?clips=64", "test", image_size=32)
    return data.clips.float() / 255


def _backbone():
    torch.manual_seed(0)
    return build_backbone("small_cnn", in_channels=1, image_size=32, width=8)


def _monotonic(index: torch.Tensor) -> torch.Tensor:
    steps = index.diff(dim=-1)
    return (steps > 0).all(-1) | (steps < 0).all(-1)


def test_frame_order_labels_are_correct_by_construction(clips):
    torch.manual_seed(0)
    tuples, labels, index = order_tuples(clips.repeat(4, 1, 1, 1, 1), gap=3)
    positive = labels.bool()
    assert positive.sum() == len(labels) // 2
    assert (index[positive].diff(dim=1) == 3).all()  # (b, c, d) in temporal order
    assert not _monotonic(index[~positive]).any()  # (b, a, d) or (b, e, d): never in order
    rows = torch.arange(len(index))[:, None]
    assert torch.equal(tuples, clips.repeat(4, 1, 1, 1, 1)[rows, index])


def test_frame_order_foreign_negatives_come_from_another_clip_laid_out_alike(clips):
    torch.manual_seed(0)
    tuples, labels, index = order_tuples(clips, gap=3, foreign=1.0)
    positive, foreign = labels.bool(), index[:, 1] == -1
    assert torch.equal(foreign, ~positive)  # foreign=1: every negative
    assert (index[positive].diff(dim=1) == 3).all()
    layout = F.adaptive_avg_pool2d(clips.mean(2), 8).flatten(2)  # (clips, frames, 64)
    for i in torch.nonzero(foreign).flatten().tolist():
        match = (clips == tuples[i, 1]).flatten(2).all(2)  # (clips, frames): where it came from
        source_clip = int(torch.nonzero(match)[0, 0])
        assert source_clip != i and not match[i].any()
        true_middle = layout[i, (index[i, 0] + index[i, 2]) // 2]
        distances = (layout - true_middle).norm(dim=2)
        distances[i] = float("inf")  # its own clip is never a candidate
        picked = layout[match].view(-1, 64)[0]
        assert torch.isclose((picked - true_middle).norm(), distances.min())


def test_frame_order_layout_expert_reads_only_where_the_ink_is_and_learns_alone(clips):
    task = FrameOrder(_backbone(), (1, 32, 32), augment=False, layout_expert=True)
    torch.manual_seed(0)
    tuples, labels, _ = order_tuples(clips, gap=3)
    # Shuffling pixels inside each 4x4 cell (an 8x8 layout at 32 px) keeps where the ink is.
    cells = tuples.unfold(3, 4, 4).unfold(4, 4, 4).flatten(-2)  # (B, 3, 1, 8, 8, 16)
    scrambled = cells[..., torch.randperm(16)].view(*cells.shape[:5], 4, 4)
    scrambled = scrambled.permute(0, 1, 2, 3, 5, 4, 6).reshape(tuples.shape)
    assert not torch.equal(scrambled, tuples)
    assert torch.allclose(task.layout_logits(scrambled), task.layout_logits(tuples), atol=1e-5)
    # The expert learns from its own verdict only; the head's loss does not move it.
    torch.manual_seed(1)
    out = task.training_step({"clips": clips})
    out["loss"].backward()
    from_step = [p.grad.clone() for p in task.layout_expert.parameters()]
    assert all(p.grad is not None for p in task.backbone.parameters())
    task.zero_grad()
    torch.manual_seed(1)
    tuples, labels, _ = order_tuples(clips, gap=3)
    F.binary_cross_entropy_with_logits(task.layout_logits(tuples), labels).backward()
    for alone, step in zip(task.layout_expert.parameters(), from_step, strict=True):
        assert torch.allclose(alone.grad, step, atol=1e-6)


def test_frame_order_batch_choice_scores_tuples_as_the_pair_head_does_and_aims_at_c(clips):
    task = FrameOrder(_backbone(), (1, 32, 32), negatives="batch").eval()
    torch.manual_seed(0)
    tuples, _, _ = order_tuples(clips, gap=3)
    features = read_frames(task, task.readout, tuples)
    # Every (b_i, x_j, d_i) scored at once is the pair head's verdict on that tuple.
    scores = task.middle_logits(features[:, 0], features[:, 2], features[:, 1])
    for j in (0, 5):
        mixed = tuples.clone()
        mixed[:, 1] = tuples[j, 1]
        assert torch.allclose(scores[:, j], task.head_logits(mixed), atol=1e-5)
    # With every candidate scored alike, the choice is among the batch's 5B frames less the
    # clip's own b and d; a head that scores each clip's own c highest has nothing left to learn.
    task.train()
    batch = len(clips)
    flat = torch.zeros(batch, 5 * batch)
    task.middle_logits = lambda first, last, candidates: flat.clone().requires_grad_()
    out = task.training_step({"clips": clips})
    assert set(out) == {"loss", "accuracy", "order_accuracy"}
    assert float(out["loss"].detach()) == pytest.approx(math.log(5 * batch - 2), abs=1e-5)
    flat[torch.arange(batch), torch.arange(batch) * 5 + 2] = 50.0
    out = task.training_step({"clips": clips})
    assert float(out["loss"].detach()) < 1e-6 and out["accuracy"] == out["order_accuracy"] == 1.0


def test_frame_order_lookalikes_are_other_clips_frames_laid_out_like_c(clips):
    from selfsup.tasks.clips import closest_frame_elsewhere, coarse_layout

    torch.manual_seed(0)
    targets = clips[:, 7]
    clip, frame = closest_frame_elsewhere(clips, targets, torch.arange(len(clips)), k=4)
    assert clip.shape == frame.shape == (len(clips), 4)
    assert not (clip == torch.arange(len(clips))[:, None]).any()  # never its own clip
    layout = coarse_layout(clips.flatten(0, 1)).view(len(clips), 20, -1)
    picked = (layout[clip, frame] - coarse_layout(targets)[:, None]).norm(dim=2)
    assert (picked.diff(dim=1) >= 0).all()  # closest first
    for i in range(len(clips)):
        others = (layout - coarse_layout(targets)[i]).norm(dim=2)
        others[i] = float("inf")
        assert torch.allclose(picked[i], others.flatten().sort().values[:4])
    task = FrameOrder(_backbone(), (1, 32, 32), negatives="batch", lookalikes=3)
    out = task.training_step({"clips": clips})
    assert 0.0 <= float(out["lookalike_accuracy"]) <= 1.0


def test_frame_order_samples_tuples_where_there_is_motion():
    clips = torch.zeros(64, 20, 1, 8, 8)
    clips[:, 12:, :, 0, :] = torch.rand(64, 8, 1, 8)  # frames 0-11 are still
    torch.manual_seed(0)
    _, _, index = order_tuples(clips, gap=1)
    # Every window a..e (5 frames) must span at least one change, i.e. reach frame 12.
    assert (index.max(1).values >= 11).all()


def test_odd_one_out_has_exactly_one_shuffled_subsequence(clips):
    torch.manual_seed(0)
    frames, odd, index = odd_questions(clips, questions=4, length=4, stride=2)
    assert frames.shape == (16, 4, 4, 1, 32, 32)
    is_odd = torch.zeros(16, 4, dtype=torch.bool)
    is_odd[torch.arange(16), odd] = True
    assert (index[~is_odd].diff(dim=1) == 2).all()
    assert not _monotonic(index[is_odd]).any()  # shuffled, and not merely reversed
    assert torch.equal(frames[3, 1, 2], clips[3, index[3, 1, 2]])


@pytest.mark.parametrize("reconstruct", [False, True], ids=["future", "composite"])
def test_future_frame_predictor_never_sees_the_frames_it_predicts(reconstruct):
    # Frame t of every clip is filled with the value t / 100, so each input reveals its time.
    clips = (torch.arange(20).float() / 100).view(1, 20, 1, 1, 1).expand(4, 20, 1, 32, 32)
    task = FutureFrame(
        _backbone(), (1, 32, 32), past=5, future=3, stride=2, reconstruct=reconstruct
    )
    seen: list[torch.Tensor] = []
    encode, encode_map = task.encode, task.encode_map  # the frames reach the backbone here
    task.encode = lambda frames: seen.append(frames) or encode(frames)
    task.encode_map = lambda frames: seen.append(frames) or encode_map(frames)
    torch.manual_seed(0)
    _, future, index = split_past_future(clips, 5, 3, 2)
    assert (index[:, :5].max(1).values < index[:, 5:].min(1).values).all()
    torch.manual_seed(0)
    logs = task.training_step({"clips": clips.contiguous()})
    assert torch.isfinite(logs["loss"])
    encoded_times = (torch.cat(seen)[:, 0, 0, 0] * 100).round().long().view(4, 5)
    target_times = (future[:, :, 0, 0, 0] * 100).round().long()
    for clip in range(4):
        assert not set(encoded_times[clip].tolist()) & set(target_times[clip].tolist())
    # And the prediction is a function of the past alone.
    past = clips[:, :5].contiguous()
    task.eval()
    assert torch.equal(task.predict(past), task.predict(past.clone()))


def test_composite_future_frame_also_redraws_the_past_it_was_given(clips):
    task = FutureFrame(_backbone(), (1, 32, 32), past=4, future=2, reconstruct=True).eval()
    past = clips[:, :4].contiguous()
    assert task.draw_logits(past).shape == (16, 6, 1, 32, 32)
    assert task.predict(past).shape == (16, 2, 1, 32, 32)  # the future alone
    torch.manual_seed(0)
    logs = task.training_step({"clips": clips})
    # The L1 loss is the mean over all drawn frames: 2 future ones and 4 redrawn past ones.
    expected = (2 * logs["l1"] + 4 * logs["past_l1"]) / 6
    assert torch.allclose(logs["loss"], expected, atol=1e-6)
    torch.manual_seed(0)
    past, _, _ = split_past_future(clips, 4, 2)
    redrawn = torch.sigmoid(task.draw_logits(past))[:, 2:]
    assert torch.allclose(logs["past_l1"], F.l1_loss(redrawn, past), atol=1e-6)
    with pytest.raises(SelfSupError, match="needs predictor: conv"):
        FutureFrame(_backbone(), (1, 32, 32), predictor="gru", reconstruct=True)


def test_dpc_predicts_from_the_past_and_is_scored_against_the_future():
    # Frame t of every clip is filled with the value t / 100, so each input reveals its time.
    clips = (torch.arange(20).float() / 100).view(1, 20, 1, 1, 1).expand(4, 20, 1, 32, 32)
    task = DensePredictiveCoding(_backbone(), (1, 32, 32), past=5, future=3, stride=2, dim=16)
    seen: dict[str, torch.Tensor] = {}
    predict, targets = task.predict, task.targets

    def recording_predict(frames):
        seen["predicted from"] = frames
        return predict(frames)

    def recording_targets(frames):
        seen["scored against"] = frames
        return targets(frames)

    task.predict, task.targets = recording_predict, recording_targets
    torch.manual_seed(0)
    logs = task.training_step({"clips": clips.contiguous()})
    assert torch.isfinite(logs["loss"]) and 0 <= logs["accuracy"] <= 1
    past = (seen["predicted from"][:, :, 0, 0, 0] * 100).round().long()
    future = (seen["scored against"][:, :, 0, 0, 0] * 100).round().long()
    assert past.shape == (4, 5) and future.shape == (4, 3)
    # Every frame the prediction reads comes before every frame it is scored against.
    assert (past.max(1).values < future.min(1).values).all()
    with pytest.raises(SelfSupError, match="temperature"):
        DensePredictiveCoding(_backbone(), (1, 32, 32), temperature=0)


def test_dpc_same_cell_candidates_differ_only_in_what_the_clip_shows(clips):
    # Four copies of one still clip (so every window is the same): with the same cell of the
    # other clips as the only candidates, nothing tells the true one apart, whatever the
    # network: the loss is exactly log 4.
    copies = clips[:1, :1].expand(4, *clips.shape[1:]).contiguous()
    torch.manual_seed(0)
    task = DensePredictiveCoding(_backbone(), (1, 32, 32), past=3, future=2, negatives="same_cell")
    loss = task.training_step({"clips": copies})["loss"]
    assert float(loss.detach()) == pytest.approx(math.log(4), abs=1e-4)
    with pytest.raises(SelfSupError, match="negatives"):
        DensePredictiveCoding(_backbone(), (1, 32, 32), negatives="others")


@pytest.mark.parametrize(
    "make",
    [
        lambda b: FrameOrder(b, (1, 32, 32), gap=3),
        lambda b: OddOneOut(b, (1, 32, 32), questions=3, length=3),
        lambda b: FutureFrame(b, (1, 32, 32), past=4, future=2),
        lambda b: FrameOrder(b, (1, 32, 32), readout="pooled"),
        lambda b: FutureFrame(b, (1, 32, 32), past=4, future=2, predictor="gru"),
        lambda b: FutureFrame(b, (1, 32, 32), past=4, future=2, loss="bce"),
        lambda b: FutureFrame(b, (1, 32, 32), past=4, future=2, reconstruct=True),
        lambda b: FrameOrder(b, (1, 32, 32), frame_shift=3),
        lambda b: FrameOrder(b, (1, 32, 32), frame_turns=0.5, frame_flips=True),
        lambda b: FrameOrder(b, (1, 32, 32), foreign=0.5),
        lambda b: FrameOrder(b, (1, 32, 32), foreign=0.5, layout_expert=True),
        lambda b: FrameOrder(b, (1, 32, 32), negatives="batch", lookalikes=2, frame_shift=2),
        lambda b: DensePredictiveCoding(b, (1, 32, 32), past=3, future=2, dim=16, width=32),
        lambda b: DensePredictiveCoding(
            b, (1, 32, 32), past=3, future=2, dim=16, width=32, negatives="same_cell"
        ),
    ],
    ids=[
        "frame_order",
        "odd_one_out",
        "future_frame",
        "frame_order_pooled",
        "future_frame_gru",
        "future_frame_bce",
        "future_frame_composite",
        "frame_order_shifted",
        "frame_order_turned_and_flipped",
        "frame_order_foreign",
        "frame_order_layout_expert",
        "frame_order_batch_choice",
        "dpc",
        "dpc_same_cell",
    ],
)
def test_video_tasks_train_on_real_clips_and_draw_pictures(clips, make):
    task = make(_backbone())
    optimizer = torch.optim.AdamW(task.parameters(), lr=3e-3)
    before = [p.detach().clone() for p in task.backbone.parameters()]
    torch.manual_seed(0)
    losses = []
    for _ in range(8):
        loss = task.training_step({"clips": clips})["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    after = task.backbone.parameters()
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    task.eval()
    pictures = task.show(clips[:8])
    assert pictures and all(p.ndim == 4 and p.shape[-2:] == (32, 32) for p in pictures.values())
    if isinstance(task, FrameOrder):  # rows: sorted tuple, separator, shuffled, separator
        panels = next(iter(pictures.values())).unflatten(0, (-1, 8))
        assert torch.all(panels[:, [3, 7]] == 0.5)  # grey: a black one looks like an empty frame
    if isinstance(task, FutureFrame):
        assert losses[-1] < losses[0]  # learns to draw dark frames with bright digits
    if isinstance(task, DensePredictiveCoding):
        assert losses[-1] < losses[0]  # starts near log(candidates), learns to pick


@pytest.mark.parametrize("make", [FutureFrame, DensePredictiveCoding], ids=["future", "dpc"])
def test_map_tasks_take_a_vit_whose_map_comes_from_its_tokens(clips, make):
    torch.manual_seed(0)
    vit = build_backbone("vit_tiny", in_channels=1, image_size=16, dim=32, depth=1, heads=2)
    task = make(vit, (1, 16, 16), past=3, future=2)
    small = F.interpolate(clips[:4].flatten(0, 1), size=16).unflatten(0, (4, 20))
    loss = task.training_step({"clips": small})["loss"]
    assert torch.isfinite(loss)
    loss.backward()


def test_map_readout_keeps_the_layout_of_the_feature_map():
    torch.manual_seed(0)
    readout = MapReadout(in_channels=16, channels=4, grid=4).eval()
    feature_map = torch.randn(2, 16, 8, 8)
    flipped = readout(feature_map.flip(-1)).view(2, 4, 4, 4)
    assert torch.allclose(flipped, readout(feature_map).view(2, 4, 4, 4).flip(-1), atol=1e-6)
    # Pooled features cannot tell a map from its mirror image; the readout can.
    assert not torch.allclose(flipped.flatten(1), readout(feature_map).flatten(1))
    with pytest.raises(SelfSupError, match="unknown readout"):
        FrameOrder(_backbone(), (1, 32, 32), readout="spatial")


def test_video_tasks_ask_for_video_data():
    task = FrameOrder(_backbone(), (1, 32, 32))
    with pytest.raises(SelfSupError, match="moving-mnist:DIR"):
        task.training_step({"images": torch.rand(4, 1, 32, 32)})
    # Five frames gap=3 apart span 13: shorter clips get a one-line error, not a traceback.
    for windows in ("motion", "crossing"):
        short = {"images": torch.rand(4, 1, 32, 32), "clips": torch.rand(4, 8, 1, 32, 32)}
        with pytest.raises(SelfSupError, match="windows of 13 frames but the clips have 8"):
            FrameOrder(_backbone(), (1, 32, 32), windows=windows).training_step(short)


@pytest.mark.parametrize("task", ["micle", "simclr", "frame_order", "dpc"])
def test_pretrain_on_moving_mnist_from_the_cli(tmp_path, shared_data, task):
    from selfsup.cli import main

    spec = f"moving-mnist:{shared_data / 'mnist'}?clips=8&frames=13"
    out = tmp_path / task
    argv = ["pretrain", "--task", task, "--data", spec, "--image-size", "32", "--steps", "2",
            "--batch-size", "16", "--set", "backbone_options.width=8", "--out", str(out),
            "--no-progress", "--log-every", "1"]  # fmt: skip
    assert main(argv) == 0
    import json

    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(logs) == 2
    if task == "micle":
        # Partners are other frames of the same clip: always a different image.
        assert all(row["distinct_pairs"] == 1.0 for row in logs)


def test_frame_order_options_are_checked():
    with pytest.raises(SelfSupError, match="probability"):
        FrameOrder(_backbone(), (1, 32, 32), frame_turns=1.5)
    with pytest.raises(SelfSupError, match="foreign is a probability"):
        FrameOrder(_backbone(), (1, 32, 32), foreign=-0.1)
    with pytest.raises(SelfSupError, match="square"):
        FrameOrder(_backbone(), (1, 32, 24), frame_turns=True)
    with pytest.raises(SelfSupError, match="crossing"):
        FrameOrder(_backbone(), (1, 32, 32), windows="overlap")
    with pytest.raises(SelfSupError, match="negatives is one of pair, batch"):
        FrameOrder(_backbone(), (1, 32, 32), negatives="all")
    with pytest.raises(SelfSupError, match="leave foreign"):
        FrameOrder(_backbone(), (1, 32, 32), negatives="batch", foreign=0.5)
    with pytest.raises(SelfSupError, match="lookalikes"):
        FrameOrder(_backbone(), (1, 32, 32), lookalikes=4)


def test_crossing_windows_are_drawn_where_the_objects_overlap():
    # Two 4x4 squares slide towards each other along one row (the brighter pixel wins where
    # they overlap, as in Moving MNIST) and overlap fully in frame 10 only.
    from selfsup.tasks.frame_order import crossing_weights

    clips = torch.zeros(1, 20, 1, 8, 40)
    for t in range(20):
        clips[0, t, 0, 2:6, 2 + t : 6 + t] = 1.0
        clips[0, t, 0, 2:6, 22 - t : 26 - t] = 1.0
    gap = 2
    weights = crossing_weights(clips, gap)[0]  # one per start, the window start .. start + 8
    covers = [start <= 10 <= start + 4 * gap and (10 - start) % gap == 0 for start in range(12)]
    assert all(weights[start] > 0 for start in range(12) if covers[start])
    assert weights.argmax().item() in [start for start in range(12) if covers[start]]
    torch.manual_seed(0)
    _, _, index = order_tuples(clips.expand(64, -1, -1, -1, -1), gap, "crossing")
    starts = index[:, 0] - gap  # b is the window's second frame
    assert (starts >= 1).all()  # start 0 (frames 0, 2, ..., 8) has no overlap: never drawn
