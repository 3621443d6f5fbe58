"""The batcher with the fast decoder: a prompt longer than one prefill pass, a request that
joins a running pass."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
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


def started(tiny_model_dir: Path, *, join_prefills: bool = False) -> ContinuousBatcher:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    fast = FastDecoder.build(model)
    assert fast is not None
    assert fast.pass_rows, "this CPU packs no prefills: the test would not cross passes"
    batcher = ContinuousBatcher(
        model,
        eos_token_ids={-1},
        max_running=4,
        max_waiting=4,
        fast_decoder=fast,
        join_prefills=join_prefills,
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


@pytest.mark.parametrize("join", [True, False])
def test_a_request_arriving_during_a_pass_joins_it(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, join: bool
) -> None:
    """A request submitted while the first request's pass runs (here: when the pass asks
    for joiners before its first layer) is prefilled in that pass, with the tokens it gets
    alone; without joining it waits for a pass of its own."""
    first_prompt, late_prompt = [5, 6, 7, 8, 9], [11, 12, 13]
    batcher = started(tiny_model_dir, join_prefills=join)
    fast = batcher.fast_decoder
    assert fast is not None
    prefill = fast.prefill
    late: list[Sequence] = []

    def arrive() -> None:
        if late:
            batcher.submit(late.pop())

    def prefill_with_a_late_arrival(chunks: Any, length: int, *, joining: Any = None) -> Any:
        if joining is None:
            arrive()
            return prefill(chunks, length)

        def arriving(layer: int, rows: int) -> Any:
            arrive()
            return joining(layer, rows)

        return prefill(chunks, length, joining=arriving)

    async def run() -> list[list[int | None]]:
        loop = asyncio.get_running_loop()
        first, second = (Sequence(p, SamplingParams(4, 0.0), None, loop)
                         for p in (first_prompt, late_prompt))  # fmt: skip
        late.append(second)
        batcher.submit(first)
        tokens: list[list[int | None]] = [[], []]
        for seq, got in zip((first, second), tokens, strict=True):
            while not got or got[-1] is not None:
                got.append((await seq.events.get()).token_id)
        return tokens

    monkeypatch.setattr(fast, "prefill", prefill_with_a_late_arrival)
    try:
        together = asyncio.run(run())
        monkeypatch.undo()
        assert dict(batcher.stats.prefill_batch_sizes) == ({2: 1} if join else {1: 2})
        alone = [[e.token_id for e in events_of(batcher, [prompt], 4)[0]]
                 for prompt in (first_prompt, late_prompt)]  # fmt: skip
        assert together == alone
    finally:
        batcher.stop()
