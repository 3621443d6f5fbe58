"""Prefix caching in the batcher: the same tokens with the cache as without it.

The cache itself is tested in services/cpu-runtime/tests/test_prefix_cache.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from kaito_cpu_runtime.llama_decoder import FastDecoder
from kaito_cpu_runtime.prefix_cache import BLOCK_TOKENS, PrefixCache
from kaito_inference.engines.batching import ContinuousBatcher
from kaito_inference.engines.sequences import SamplingParams, Sequence


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
        # the first prompt again computes its last token only; the others share its start
        assert cached.stats.prefix_hit_tokens >= len(prompts[0]) - 1 + 2 * BLOCK_TOKENS
    finally:
        cached.stop()
