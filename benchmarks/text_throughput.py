"""Masked-LM training throughput: selfsup's Transformer + mlm task against Hugging Face
transformers' BertForMaskedLM built from the same configuration (random init), in one run.

    python benchmarks/text_throughput.py [--size mini] [--batch-size 32] [--seq-len 128]
                                         [--seconds 10] [--rounds 3] [--threads 2]

Both train on the same packed tinyshakespeare blocks with the same dynamic 15% masking
(80/10/10), AdamW, dropout 0.1, fp32 (bf16 autocast with --bf16; on CPUs without native
bf16 it is slower, so it is off by default). HF uses its SDPA attention. A step is forward +
backward + optimizer step; tokens/s counts every input token. The two are timed in
alternating windows (ours, HF, ours, HF, ...) so machine noise hits both alike; the ratio is
the median over rounds. The architectures differ where the papers do: ours is pre-norm (GPT-2
style) and computes vocabulary logits only at the masked positions; BERT is post-norm and
computes them everywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
from pathlib import Path

import torch

from selfsup.backbones.transformer import SIZES, TextTransformer
from selfsup.tasks.mlm import MaskedLM
from selfsup.text.corpus import iter_documents
from selfsup.text.data import PackedText
from selfsup.text.masking import mask_tokens
from selfsup.text.tokenizer import train_tokenizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"


def hf_model(vocab_size: int, dim: int, depth: int, heads: int, max_len: int):
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=dim,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        intermediate_size=4 * dim,
        max_position_embeddings=max_len,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        attn_implementation="sdpa",
    )
    return BertForMaskedLM(config)


def rate(step, blocks: torch.Tensor, batch_size: int, seconds: float, bf16: bool) -> float:
    """Tokens per second of `step(tokens)` over about `seconds` (at least 3 steps)."""
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or done < 3:
        idx = torch.randint(0, blocks.shape[0], (batch_size,))
        with autocast:
            step(blocks[idx].long())
        done += 1
    return done * batch_size * blocks.shape[1] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="mini", choices=list(SIZES))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--seconds", type=float, default=10.0, help="per timing window")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    lines = (s for doc in iter_documents(DATA) for s in doc)
    tokenizer = train_tokenizer(lines, "wordpiece", args.vocab_size)
    blocks = PackedText.build(iter_documents(DATA), tokenizer, args.seq_len, cls_token=True).blocks
    size = SIZES[args.size]

    ours = MaskedLM(TextTransformer(tokenizer.vocab_size, size=args.size, max_len=512), tokenizer)
    ours_opt = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    hf = hf_model(tokenizer.vocab_size, size["dim"], size["depth"], size["heads"], 512)
    hf_opt = torch.optim.AdamW(hf.parameters(), lr=1e-4)
    ours.train()
    hf.train()
    specials = tokenizer.special_ids

    def ours_step(tokens: torch.Tensor) -> None:
        ours.training_step({"tokens": tokens})["loss"].backward()
        ours_opt.step()
        ours_opt.zero_grad(set_to_none=True)

    def hf_step(tokens: torch.Tensor) -> None:
        inputs, labels = mask_tokens(tokens, tokenizer.mask_id, tokenizer.vocab_size, specials)
        hf(input_ids=inputs, labels=labels).loss.backward()
        hf_opt.step()
        hf_opt.zero_grad(set_to_none=True)

    params = sum(p.numel() for p in ours.backbone.parameters())
    hf_params = sum(p.numel() for p in hf.bert.parameters())
    print(
        f"size {args.size} ({params / 1e6:.1f}M backbone parameters, HF BertModel "
        f"{hf_params / 1e6:.1f}M), vocab {tokenizer.vocab_size}, batch {args.batch_size} x "
        f"{args.seq_len} tokens, {args.threads} threads, {'bf16' if args.bf16 else 'fp32'}, "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}"
    )
    # Warm-up (allocator, kernels) outside the timed windows.
    rate(ours_step, blocks, args.batch_size, 0.0, args.bf16)
    rate(hf_step, blocks, args.batch_size, 0.0, args.bf16)
    ratios = []
    for r in range(args.rounds):
        mine = rate(ours_step, blocks, args.batch_size, args.seconds, args.bf16)
        theirs = rate(hf_step, blocks, args.batch_size, args.seconds, args.bf16)
        ratios.append(mine / theirs)
        print(
            f"round {r + 1}: selfsup {mine:,.0f} tokens/s, BertForMaskedLM {theirs:,.0f} "
            f"tokens/s, ratio {mine / theirs:.2f}x"
        )
    print(f"median ratio selfsup / BertForMaskedLM: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
