"""`selfsup generate RUN`: sample text from a run trained with the causal LM (clm)."""

from __future__ import annotations

from pathlib import Path

import torch

from selfsup.errors import SelfSupError


def generate_text(
    run_dir: str | Path,
    prompt: str = "",
    *,
    tokens: int = 100,
    samples: int = 1,
    temperature: float = 0.8,
    top_k: int | None = 50,
    seed: int = 0,
) -> list[str]:
    """`samples` continuations of `prompt`, each `tokens` new tokens long. `temperature` 0
    always takes the likeliest token; `top_k` 0 or None samples among all tokens."""
    from selfsup.text.build import trained_text_task

    for name, value in (("tokens", tokens), ("samples", samples)):
        if value < 1:
            raise SelfSupError(f"generate needs {name} >= 1, got {value}")
    if not temperature >= 0:  # also refuses NaN
        raise SelfSupError(f"temperature must be 0 (greedy) or more, got {temperature}")
    if top_k is not None and top_k < 0:
        raise SelfSupError(f"top_k must be 0 (all tokens) or more, got {top_k}")
    top_k = top_k or None

    task, tokenizer = trained_text_task(run_dir)
    if not hasattr(task, "generate"):
        raise SelfSupError(f"{run_dir} was trained with {task.name}; generate needs a clm run")
    ids = tokenizer.encode([prompt])[0] if prompt else []
    # An empty prompt starts after an end-of-text separator, as a new document would.
    start = torch.tensor([[tokenizer.sep_id, *ids]] * samples)
    torch.manual_seed(seed)
    out = task.generate(start, tokens, temperature=temperature, top_k=top_k)
    return [prompt + tokenizer.decode(row[start.shape[1] :].tolist()) for row in out]
