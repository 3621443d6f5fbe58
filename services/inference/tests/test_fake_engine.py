"""The fake engine the router and protocol tests run on: deterministic, torch-free, and
honest about the engine contract (finish reasons, token counts, stop strings, queue limit)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncGenerator

import pytest

from kaito_inference.engines.base import GenerationParams, QueueFullError, TextDelta
from kaito_inference.engines.fake import FakeEngine


def run(
    engine: FakeEngine,
    prompt: str,
    adapter: str | None = None,
    *,
    max_tokens: int = 100,
    temperature: float = 0.0,
    seed: int | None = None,
    stop: tuple[str, ...] = (),
) -> list[TextDelta]:
    """Every delta the engine streams for ``prompt``."""
    params = GenerationParams(max_tokens, temperature, seed=seed, stop=list(stop))

    async def collect() -> list[TextDelta]:
        stream = engine.generate(engine.encode_prompt(prompt), params, adapter=adapter)
        return [delta async for delta in stream]

    return asyncio.run(collect())


def text(deltas: list[TextDelta]) -> str:
    return "".join(d.text for d in deltas)


def test_echoes_the_prompt_then_stops_counting_bytes() -> None:
    deltas = run(FakeEngine(), "héllo world")
    assert text(deltas) == "héllo world"
    assert [d.finish_reason for d in deltas][-1] == "stop"
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert deltas[-1].completion_tokens == len("héllo world".encode())


def test_max_tokens_ends_with_length_and_never_splits_a_character() -> None:
    deltas = run(FakeEngine(), "héllo world", max_tokens=2)  # "h" and half of "é"
    assert deltas[-1].finish_reason == "length"
    assert deltas[-1].completion_tokens == 2
    assert "\ufffd" not in text(deltas[:-1])


def test_stop_string_is_cut_even_across_tokens() -> None:
    deltas = run(FakeEngine(), "one two three", stop=("o th",))
    assert text(deltas) == "one tw"
    assert deltas[-1].finish_reason == "stop"


def test_seeded_sampling_repeats_and_seeds_differ() -> None:
    engine = FakeEngine()
    prompt = "alpha beta gamma delta epsilon zeta eta theta"
    same = {text(run(engine, prompt, temperature=1.0, seed=7)) for _ in range(3)}
    assert len(same) == 1
    outputs = {text(run(engine, prompt, temperature=1.0, seed=s)) for s in range(10)}
    assert len(outputs) > 1
    assert all(sorted(o.split()) == sorted(prompt.split()) for o in outputs)


def test_an_adapter_changes_the_answer() -> None:
    engine = FakeEngine(adapters=["shout"])
    assert text(run(engine, "quiet please", adapter="shout")) == "QUIET PLEASE"
    assert text(run(engine, "quiet please")) == "quiet please"


def test_full_queue_raises_at_the_first_anext_and_frees_on_close() -> None:
    engine = FakeEngine(max_running=1, max_waiting=0, token_delay_s=0.01)
    params = GenerationParams(max_tokens=50)

    async def scenario() -> tuple[int, int]:
        first: AsyncGenerator[TextDelta, None] = engine.generate([65] * 20, params, adapter=None)
        await anext(first)
        busy = engine.queue_depth()
        with pytest.raises(QueueFullError):
            await anext(engine.generate([65], params, adapter=None))
        await first.aclose()
        assert engine.queue_depth() == (0, 0)
        return busy

    assert asyncio.run(scenario()) == (1, 0)


def test_load_delay_and_load_failure() -> None:
    slow = FakeEngine(load_delay_s=30)
    slow.start()
    assert not slow.ready
    slow.stop()
    broken = FakeEngine(load_failure="weights are corrupt")
    broken.start()
    deadline = time.monotonic() + 10
    while broken.load_error is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not broken.ready
    assert str(broken.load_error) == "weights are corrupt"


def test_an_app_on_the_fake_engine_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "from kaito_inference.app import create_app\n"
        "from kaito_inference.engines.fake import FakeEngine\n"
        "create_app(engine=FakeEngine())\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
