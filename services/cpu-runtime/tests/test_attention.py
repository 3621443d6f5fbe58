"""Prefill attention: the last rows of a prompt, computed after its cached start, get the
bits they get in the pass of the whole prompt."""

from __future__ import annotations

import pytest
import torch

from kaito_cpu_runtime.attention import causal_mask, prefill_attention


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("length", [5, 41, 200, 530])
def test_a_prompts_end_gets_the_bits_of_the_whole_prompts_pass(length: int, threads: int) -> None:
    generator = torch.Generator().manual_seed(length)
    query, key, value = (
        torch.randn(1, heads, length, 64, generator=generator) for heads in (9, 3, 3)
    )
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        whole = prefill_attention(
            query, key, value, causal_mask(torch.ones((1, length)), length), gqa=True
        )
        for rows in [*range(1, 6), 8, 13, length]:
            if rows > length:
                continue
            end = prefill_attention(
                query[:, :, -rows:],
                key,
                value,
                causal_mask(torch.ones((1, length)), rows),
                gqa=True,
            )
            assert end.shape == (1, 9, rows, 64)
            assert torch.equal(end, whole[:, :, -rows:]), f"{rows} rows after {length - rows}"
    finally:
        torch.set_num_threads(before)
