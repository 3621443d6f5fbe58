"""Prefix caching: the cache itself, and the batcher giving the same tokens with it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from kaito_inference.engines.batching import ContinuousBatcher
from kaito_inference.engines.fast_decoder import FastDecoder
from kaito_inference.engines.prefix_cache import BLOCK_TOKENS, PrefixCache
from kaito_inference.engines.sequences import SamplingParams, Sequence


def states(length: int, fill: float = 0.0, layers: int = 2) -> list[Any]:
    return [(torch.full((2, length, 4), fill), torch.full((2, length, 4), -fill))] * layers


def test_lookup_finds_the_longest_whole_block_start() -> None:
    cache = PrefixCache(max_tokens=1000)
    prompt = list(range(3 * BLOCK_TOKENS + 5))
    assert cache.lookup(None, prompt) == (0, [])
    cache.insert(None, prompt[: 2 * BLOCK_TOKENS], states(2 * BLOCK_TOKENS, 1.0))
    length, found = cache.lookup(None, prompt)
    assert length == 2 * BLOCK_TOKENS
    assert found[0][0].shape == (2, 2 * BLOCK_TOKENS, 4)
    other = prompt[:BLOCK_TOKENS] + [999] * (2 * BLOCK_TOKENS)  # diverges in block 2
    assert cache.lookup(None, other)[0] == BLOCK_TOKENS
    assert cache.lookup("an-adapter", prompt) == (0, [])  # adapters never share states


def test_a_prompt_of_whole_blocks_keeps_one_token_to_compute() -> None:
    cache = PrefixCache(max_tokens=1000)
    prompt = list(range(2 * BLOCK_TOKENS))
    cache.insert(None, prompt, states(2 * BLOCK_TOKENS))
    assert cache.lookup(None, prompt)[0] == BLOCK_TOKENS
    assert PrefixCache.reusable_length(2 * BLOCK_TOKENS) == BLOCK_TOKENS
    assert PrefixCache.reusable_length(BLOCK_TOKENS) == 0


def test_eviction_by_tokens_and_subsumed_entries() -> None:
    cache = PrefixCache(max_tokens=3 * BLOCK_TOKENS)
    first = list(range(BLOCK_TOKENS))
    cache.insert(None, first, states(BLOCK_TOKENS))
    longer = first + list(range(100, 100 + BLOCK_TOKENS))
    cache.insert(None, longer, states(2 * BLOCK_TOKENS))  # contains the first: replaces it
    assert cache.cached_tokens == 2 * BLOCK_TOKENS
    assert cache.lookup(None, [*first, 7])[0] == BLOCK_TOKENS
    cache.insert(None, list(range(500, 500 + 2 * BLOCK_TOKENS)), states(2 * BLOCK_TOKENS))
    assert cache.cached_tokens == 2 * BLOCK_TOKENS  # the least recently used went
    assert cache.lookup(None, [*longer, 7]) == (0, [])
    cache.insert(None, list(range(5 * BLOCK_TOKENS)), states(5 * BLOCK_TOKENS))  # too big
    assert cache.cached_tokens == 2 * BLOCK_TOKENS
    cache.clear()
    assert cache.cached_tokens == 0


def generate(batcher: ContinuousBatcher, prompts: list[list[int]], tokens: int) -> list[list[int]]:
    """Greedy completions of ``prompts``, all submitted together."""

    async def run() -> list[list[int]]:
        loop = asyncio.get_running_loop()

        async def one(prompt: list[int]) -> list[int]:
            seq = Sequence(prompt, SamplingParams(tokens, 0.0), None, loop)
            batcher.submit(seq)
            out = []
            while (event := await seq.events.get()).token_id is not None:
                out.append(event.token_id)
            return out

        return list(await asyncio.gather(*(one(p) for p in prompts)))

    return asyncio.run(run())


@pytest.mark.slow
@pytest.mark.parametrize("fast", [True, False], ids=["fast-decoder", "transformers-forward"])
def test_batcher_gives_the_same_tokens_with_the_cache(smollm2_dir: Path, fast: bool) -> None:
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    system = {"role": "system", "content": "You answer questions about geography, briefly."}
    questions = ["What is the capital of France?", "Name a river in Egypt.", "Where is Peru?"]
    prompts = [
        list(tokenizer.apply_chat_template([system, {"role": "user", "content": q}],
                                           add_generation_prompt=True, return_dict=False))
        for q in questions
    ]  # fmt: skip
    prompts.append(prompts[0][:20] + prompts[1][20:])  # shares only the first block

    def batcher(cache: PrefixCache | None) -> ContinuousBatcher:
        engine = ContinuousBatcher(
            model,
            eos_token_ids={-1},
            pad_token_id=tokenizer.pad_token_id,
            max_running=8,
            max_waiting=8,
            fast_decoder=FastDecoder.build(model) if fast else None,
            prefix_cache=cache,
        )
        engine.start()
        return engine

    plain = batcher(None)
    expected = generate(plain, prompts, 8)
    plain.stop()
    cached = batcher(PrefixCache(max_tokens=1024))
    try:
        assert generate(cached, prompts[:1], 8) == expected[:1]  # fills the cache
        assert cached.stats.prefix_hit_tokens == 0
        assert generate(cached, prompts, 8) == expected  # reuses it
        assert cached.stats.prefix_hit_tokens >= 2 * BLOCK_TOKENS
    finally:
        cached.stop()
