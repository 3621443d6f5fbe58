"""The batcher with the fast decoder: a prompt longer than one prefill pass."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from kaito_cpu_runtime.llama_decoder import FastDecoder
from kaito_inference.engines.batching import ContinuousBatcher
from kaito_inference.engines.sequences import SamplingParams, Sequence, TokenEvent


def events_of(batcher: ContinuousBatcher, prompts: list[list[int]], tokens: int) -> list[Any]:
    """Every event of greedy completions of ``prompts``, all submitted together."""

    async def run() -> list[list[TokenEvent]]:
        loop = asyncio.get_running_loop()

        async def one(prompt: list[int]) -> list[TokenEvent]:
            seq = Sequence(prompt, SamplingParams(tokens, 0.0), None, loop)
            batcher.submit(seq)
            events = [await seq.events.get()]
            while events[-1].token_id is not None:
                events.append(await seq.events.get())
            return events

        return list(await asyncio.gather(*(one(p) for p in prompts)))

    return asyncio.run(run())


def started(tiny_model_dir: Path) -> ContinuousBatcher:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    fast = FastDecoder.build(model)
    assert fast is not None
    assert fast.pass_rows, "this CPU packs no prefills: the test would not cross passes"
    batcher = ContinuousBatcher(
        model, eos_token_ids={-1}, max_running=4, max_waiting=4, fast_decoder=fast
    )
    batcher.start()
    return batcher


def test_a_prompt_longer_than_a_pass_is_served_beside_a_short_one(tiny_model_dir: Path) -> None:
    batcher = started(tiny_model_dir)
    try:
        longest = batcher.fast_decoder.pass_rows[-1]  # type: ignore[union-attr]  # built above
        long_prompt = [5 + i % 50 for i in range(2 * longest + 7)]  # three passes
        short_prompt = [7, 8, 9]
        long_events, short_events = events_of(batcher, [long_prompt, short_prompt], 4)
        for events in (long_events, short_events):
            assert [e.finish_reason for e in events] == [None] * 4 + ["length"]
        assert sum(batcher.stats.prefill_batch_sizes.values()) >= 3
        (alone,) = events_of(batcher, [long_prompt], 4)
        assert [e.token_id for e in alone] == [e.token_id for e in long_events]
    finally:
        batcher.stop()
