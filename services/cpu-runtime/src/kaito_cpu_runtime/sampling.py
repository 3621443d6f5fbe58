"""The next token of each row of a batch: greedy, or sampled with temperature and top-p."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["sample_tokens"]


def sample_tokens(
    logits: torch.Tensor,
    temperatures: Sequence[float],
    top_ps: Sequence[float],
    generators: Sequence[torch.Generator | None],
) -> list[int]:
    """One token per row of ``logits`` (``[rows, vocab]``).

    A row with temperature 0 takes the most likely token; otherwise it samples from the
    softmax of its logits over the temperature, kept to the smallest set of tokens whose
    probability reaches ``top_p`` (1.0: every token), drawn with the row's generator
    (``None``: torch's global one); a seeded generator per row makes a row repeat its
    tokens whatever else shares the batch.
    """
    chosen = logits.argmax(dim=-1).tolist()
    for row, (temperature, top_p, generator) in enumerate(
        zip(temperatures, top_ps, generators, strict=True)
    ):
        if temperature <= 0:
            continue
        probs = torch.softmax(logits[row] / temperature, dim=-1)
        if top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            keep = sorted_probs.cumsum(-1) - sorted_probs < top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        chosen[row] = int(torch.multinomial(probs, 1, generator=generator).item())
    return [int(t) for t in chosen]
