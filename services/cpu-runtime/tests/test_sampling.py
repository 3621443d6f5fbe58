"""Token sampling: greedy rows take the argmax, seeded rows repeat, top-p narrows."""

from __future__ import annotations

import torch

from kaito_cpu_runtime.sampling import sample_tokens


def logits() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(3, 50)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_temperature_zero_is_greedy() -> None:
    rows = logits()
    assert sample_tokens(rows, [0.0] * 3, [1.0] * 3, [None] * 3) == rows.argmax(-1).tolist()


def test_a_seeded_row_repeats_whatever_shares_its_batch() -> None:
    rows = logits()
    first = sample_tokens(rows, [0.0, 1.5, 0.0], [1.0] * 3, [None, seeded(7), None])
    other = logits()
    other[0], other[2] = other[2].clone(), other[0].clone()  # different neighbours
    again = sample_tokens(other, [1.5, 1.5, 1.5], [1.0] * 3, [None, seeded(7), None])
    assert again[1] == first[1]
    draws = {sample_tokens(rows[1:2], [5.0], [1.0], [seeded(s)])[0] for s in range(20)}
    assert len(draws) > 1  # a high temperature really samples


def test_a_tiny_top_p_keeps_only_the_most_likely_token() -> None:
    rows = logits()
    picked = [sample_tokens(rows, [5.0] * 3, [1e-6] * 3, [seeded(s)] * 3) for s in range(5)]
    assert all(tokens == rows.argmax(-1).tolist() for tokens in picked)
