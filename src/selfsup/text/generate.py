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
    """`samples` continuations of `prompt`, each `tokens` tokens long (prompt included)."""
    from selfsup.text.build import trained_text_task

    task, tokenizer = trained_text_task(run_dir)
    if not hasattr(task, "generate"):
        raise SelfSupError(f"{run_dir} was trained with {task.name}; generate needs a clm run")
    ids = tokenizer.encode([prompt])[0] if prompt else []
    # An empty prompt starts after an end-of-text separator, as a new document would.
    start = torch.tensor([[tokenizer.sep_id, *ids]] * samples)
    torch.manual_seed(seed)
    out = task.generate(start, tokens, temperature=temperature, top_k=top_k)
    return [prompt + tokenizer.decode(row[start.shape[1] :].tolist()) for row in out]
