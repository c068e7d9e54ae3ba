"""Text tasks: their free labels (masking, causal mask, TLM views) and short real runs."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.backbones.transformer import PAD_ID, TextTransformer
from selfsup.recipe import Recipe
from selfsup.runs import pretrain_run
from selfsup.tasks.tlm import tlm_view
from selfsup.text.masking import IGNORE, mask_tokens

pytestmark = pytest.mark.usefixtures("one_thread")

MASK, VOCAB, SPECIALS = 4, 500, [0, 1, 2, 3, 4, 5]


def test_masking_rate_and_80_10_10_split_within_statistical_bounds():
    torch.manual_seed(0)
    tokens = torch.randint(6, VOCAB, (64, 512))
    tokens[:, 0], tokens[:, -1] = 2, 3  # [CLS] ... [SEP]: never targets
    inputs, targets = mask_tokens(tokens, MASK, VOCAB, SPECIALS, rate=0.15)
    chosen = targets != IGNORE
    n, m = tokens[:, 1:-1].numel(), int(chosen.sum())
    # 5 standard deviations of a binomial: fails by chance about once in 3.5 million runs.
    assert abs(m / n - 0.15) < 5 * math.sqrt(0.15 * 0.85 / n)
    assert not chosen[:, 0].any() and not chosen[:, -1].any()
    assert (targets[chosen] == tokens[chosen]).all()
    masked = (inputs == MASK) & chosen
    unchanged = (inputs == tokens) & chosen
    randomised = chosen & ~masked & ~unchanged
    for part, p in ((masked, 0.8), (randomised, 0.1), (unchanged, 0.1)):
        # A random replacement equals the original with chance 1/494: counted as unchanged.
        assert abs(int(part.sum()) / m - p) < 5 * math.sqrt(p * (1 - p) / m) + 1 / 494
    assert (inputs[~chosen] == tokens[~chosen]).all()  # nothing else is touched
    assert not torch.isin(inputs[randomised], torch.tensor(SPECIALS)).any()
    # Dynamic masking: the next call hides other tokens.
    _, again = mask_tokens(tokens, MASK, VOCAB, SPECIALS, rate=0.15)
    assert not torch.equal(again != IGNORE, chosen)


@pytest.mark.parametrize("positions", ["learned", "rotary"])
@pytest.mark.parametrize("padded", [False, True])
def test_causal_mask_lets_no_position_see_the_future(padded, positions):
    torch.manual_seed(0)
    decoder = TextTransformer(VOCAB, size="tiny", causal=True, max_len=32, positions=positions)
    encoder = TextTransformer(VOCAB, size="tiny", causal=False, max_len=32, positions=positions)
    decoder, encoder = decoder.eval(), encoder.eval()
    tokens = torch.randint(6, VOCAB, (3, 20))
    if padded:
        tokens[:, 15:] = PAD_ID
    for k in (5, 11, 14):
        changed = tokens.clone()
        changed[:, k] = (tokens[:, k] + 1 - 6) % (VOCAB - 6) + 6
        before, after = decoder(tokens), decoder(changed)
        assert torch.equal(before[:, :k], after[:, :k])  # bit-identical: no leak at all
        assert not torch.allclose(before[:, k], after[:, k])
        # The same test has the power to see a leak: an encoder's earlier outputs do change.
        assert not torch.allclose(encoder(tokens)[:, :k], encoder(changed)[:, :k])


def test_rotary_positions_are_relative():
    torch.manual_seed(0)
    encoder = TextTransformer(VOCAB, size="tiny", max_len=64, positions="rotary").eval()
    assert encoder.embed.positions is None  # no absolute table to learn
    tokens = torch.randint(6, VOCAB, (2, 12))
    out = encoder(tokens)
    # Attention sees only offsets between tokens: moving the whole sentence changes nothing...
    shifted = encoder(tokens, positions=torch.arange(12) + 9)
    assert torch.allclose(out, shifted, atol=1e-4)
    # ...but order matters: without positions an encoder would give the reversed sentence
    # the reversed states.
    assert not torch.allclose(encoder(tokens.flip(1)).flip(1), out, atol=1e-3)
    # Per-sentence positions (TLM resets them) are honoured row by row.
    rows = torch.stack([torch.arange(12), torch.arange(12) + 3])
    assert torch.allclose(encoder(tokens, positions=rows), out, atol=1e-4)
    with pytest.raises(ValueError, match="positions"):
        TextTransformer(VOCAB, size="tiny", positions="sinusoidal")


def test_encoder_ignores_padding():
    torch.manual_seed(0)
    encoder = TextTransformer(VOCAB, size="tiny", max_len=32).eval()
    tokens = torch.randint(6, VOCAB, (2, 10))
    padded = torch.cat([tokens, torch.zeros(2, 6, dtype=torch.long)], 1)
    assert torch.allclose(encoder(tokens), encoder(padded)[:, :10], atol=1e-5)
    # The mean-pooled feature averages the real tokens' states only.
    mean = encoder.features(padded, pool="mean")
    assert torch.allclose(mean, encoder(tokens).mean(1), atol=1e-5)
    assert not torch.allclose(mean, encoder(padded).mean(1), atol=1e-3)


def test_tlm_positions_reset_per_sentence_and_masks_hit_both_languages():
    torch.manual_seed(0)
    src = torch.randint(6, VOCAB, (32, 12))
    tgt = torch.randint(6, VOCAB, (32, 15))
    src[0, 9:] = PAD_ID  # a shorter sentence: its [SEP] moves left
    tokens, positions, langs = tlm_view(src, tgt, 0, 1, cls_id=2, sep_id=3)
    assert tokens.shape == (32, 12 + 2 + 15 + 2)
    # Both sentences start with [CLS] at position 0; positions then count up again.
    assert (tokens[:, 0] == 2).all() and (tokens[:, 14] == 2).all()
    assert torch.equal(positions[0, :14], torch.arange(14))
    assert torch.equal(positions[0, 14:], torch.arange(17))
    assert (langs[:, :14] == 0).all() and (langs[:, 14:] == 1).all()
    assert tokens[0, 10] == 3 and (tokens[0, 11:14] == PAD_ID).all()
    _, targets = mask_tokens(tokens, MASK, VOCAB, SPECIALS)
    hit = targets != IGNORE
    assert hit[:, :14].any(1).float().mean() > 0.5 and hit[:, 14:].any(1).float().mean() > 0.5
    assert hit[:, :14].sum() > 0 and hit[:, 14:].sum() > 0


def _recipe(task: str, data: str, **text) -> Recipe:
    options = {} if task == "word2vec" else {"size": "tiny", "dropout": 0.0}
    return Recipe.from_dict(
        {
            "task": task,
            "data": data,
            "backbone_options": options,
            "text": {"vocab_size": 600, "seq_len": 32, "limit": 600, **text},
            "train": {"steps": 12, "batch_size": 16, "lr": 3e-3, "log_every": 4},
        }
    )


@pytest.mark.parametrize(
    ("task", "positions"),
    [(t, "learned") for t in ("mlm", "clm", "nsp", "mlm+nsp", "word2vec", "tlm")]
    + [("tlm", "rotary")],  # TLM's positions restart per sentence: rotary must take them too
)
def test_text_tasks_train_on_real_text(task, positions, shared_data, tmp_path):
    import json

    d = shared_data
    data = {
        "tlm": f"parallel:{d}/multi30k/val.en.gz,{d}/multi30k/val.de.gz",
        "word2vec": f"tsv:{d}/sst2/train.tsv,{d}/sst2/dev.tsv",
    }.get(task, f"text:{d}/tinyshakespeare/input.txt")
    recipe = _recipe(task, data)
    if positions != "learned":
        recipe.backbone_options["positions"] = positions
    summary = pretrain_run(recipe, tmp_path / "run", progress=False)
    assert summary["steps"] == 12 and math.isfinite(summary["final_loss"])
    logs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    if task != "nsp":  # NSP alone stays near chance for many more than 12 steps
        assert logs[-1]["loss"] < logs[0]["loss"]  # it learns something from its free labels
    assert (tmp_path / "run" / "tokenizer.json").is_file()
    # The recipe left the backbone to the task; run.yaml names the one that was built.
    from selfsup.recipe import load_run

    assert recipe.backbone is None
    assert load_run(tmp_path / "run").backbone == ("word_vectors" if task == "word2vec"
                                                   else "transformer")  # fmt: skip
    from selfsup.backbones import load_backbone

    backbone = load_backbone(tmp_path / "run" / "backbone")
    assert getattr(backbone, "config", {}).get("positions", positions) == positions
    assert backbone.features(torch.tensor([[2, 7, 9, 3]])).shape == (1, backbone.feature_dim)


def test_clm_generates_text_from_a_run(shared_data, tmp_path):
    from selfsup.text.generate import generate_text

    recipe = _recipe("clm", f"text:{shared_data}/tinyshakespeare/input.txt")
    pretrain_run(recipe, tmp_path / "run", progress=False)
    texts = generate_text(tmp_path / "run", "ROMEO:", tokens=12, samples=2, seed=1)
    assert len(texts) == 2 and all(t.startswith("ROMEO:") and len(t) > 6 for t in texts)
    assert texts == generate_text(tmp_path / "run", "ROMEO:", tokens=12, samples=2, seed=1)
    # Temperature 0 always takes the likeliest token: every sample, whatever the seed, agrees.
    greedy = generate_text(tmp_path / "run", "ROMEO:", tokens=8, samples=2, temperature=0)
    assert greedy[0] == greedy[1]
    assert greedy == generate_text(tmp_path / "run", "ROMEO:", tokens=8, temperature=0, seed=5) * 2
    assert len(generate_text(tmp_path / "run", tokens=4, top_k=0)) == 1  # 0: among all tokens
    from selfsup.errors import SelfSupError

    for bad in ({"temperature": -1.0}, {"top_k": -2}, {"samples": 0}, {"tokens": 0}):
        with pytest.raises(SelfSupError, match="generate needs|must be 0"):
            generate_text(tmp_path / "run", **bad)


def test_text_errors_are_one_line(shared_data, tmp_path):
    from selfsup.errors import SelfSupError

    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(SelfSupError, match="holds no text"):
        pretrain_run(_recipe("mlm", f"text:{empty}"), tmp_path / "a", progress=False)
    with pytest.raises(SelfSupError, match="needs parallel"):
        pretrain_run(
            _recipe("tlm", f"text:{shared_data}/tinyshakespeare/input.txt"),
            tmp_path / "b",
            progress=False,
        )
    with pytest.raises(SelfSupError, match="for images"):
        pretrain_run(
            _recipe("rotation", f"text:{shared_data}/tinyshakespeare/input.txt"),
            tmp_path / "c",
            progress=False,
        )
    with pytest.raises(SelfSupError, match="learns from text"):
        pretrain_run(_recipe("mlm", "digits"), tmp_path / "d", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_interrupted_text_run_resumes_to_the_same_weights(shared_data, tmp_path, monkeypatch):
    """NSP pairs and MLM masks are random per step: a resumed run must redraw the same ones."""
    import signal

    from selfsup.engine import CHECKPOINT, load_checkpoint
    from selfsup.errors import SelfSupError
    from selfsup.recipe import load_run
    from selfsup.tasks.nsp import NextSentence

    def recipe():
        # Byte-level BPE: the WordPiece trainer breaks ties at the vocabulary cutoff in hash-map
        # order, so two runs' tokenizers (not the resumed run's, which is reloaded) can differ.
        r = _recipe("mlm+nsp", f"text:{shared_data}/tinyshakespeare/input.txt", tokenizer="bpe")
        r.backbone_options["dropout"] = 0.1  # dropout's randomness must resume exactly too
        r.train.update(steps=6, checkpoint_every=100)
        return r

    pretrain_run(recipe(), tmp_path / "straight", progress=False)
    original = NextSentence.after_optimizer_step

    def interrupt_at_3(self, step, total):
        if step == 2:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(NextSentence, "after_optimizer_step", interrupt_at_3)
    with pytest.raises(SelfSupError, match="--resume"):
        pretrain_run(recipe(), tmp_path / "resumed", progress=False)
    assert int(load_checkpoint(tmp_path / "resumed" / CHECKPOINT)["step"]) == 3
    monkeypatch.setattr(NextSentence, "after_optimizer_step", original)
    resumed = tmp_path / "resumed"
    pretrain_run(load_run(resumed), resumed, resume=True, progress=False)
    a = load_checkpoint(tmp_path / "straight" / CHECKPOINT)["task"]
    b = load_checkpoint(resumed / CHECKPOINT)["task"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("task", "text", "backbone", "match"),
    [
        ("mlm", {"seq_len": 1}, {}, "at least 2 for task mlm; got 1"),
        ("clm", {"seq_len": 0}, {}, "at least 2"),
        ("nsp", {"seq_len": 4}, {}, "at least 5 for task nsp"),
        ("mlm", {"seq_len": 64}, {"max_len": 32}, "longer than backbone_options.max_len=32"),
        ("mlm", {"lowercase": "maybe"}, {}, "text.lowercase must be true or false"),
        ("mlm", {"limit": -5}, {}, "text.limit must be a whole number of at least 1"),
        ("mlm", {"limit": 0}, {}, "text.limit must be a whole number of at least 1"),
    ],
)
def test_bad_text_options_are_one_line_errors_at_start_up(task, text, backbone, match, tmp_path):
    from selfsup.errors import SelfSupError

    corpus = tmp_path / "c.txt"
    corpus.write_text("one line\ntwo lines\n\nanother document\nand more\n")
    recipe = _recipe(task, f"text:{corpus}", **text)
    recipe.backbone_options.update(backbone)
    with pytest.raises(SelfSupError, match=match) as error:
        pretrain_run(recipe, tmp_path / "run", progress=False)
    assert "\n" not in str(error.value) and not (tmp_path / "run").exists()
