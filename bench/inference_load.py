"""Load generator for any OpenAI-compatible server: streamed chat completions at fixed
concurrency levels; reports aggregate output tokens/s, TTFT p50/p95 and end-to-end p50/p95.

    python bench/inference_load.py --base-url http://127.0.0.1:5000 \
        --concurrency 1 4 16 --max-tokens 64 --json results.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import openai
from machine import describe_machine

TOPICS = [
    "a lighthouse keeper", "the history of tea", "a robot learning to paint", "volcanoes",
    "a trip to the mountains", "how bread is made", "the ocean at night", "a chess tournament",
    "a city in the year 3000", "honey bees", "a lost key", "the first day of school",
    "northern lights", "a friendly dragon", "rivers and lakes", "an old library",
]  # fmt: skip


#: The warm-up request's topic, not one of :data:`TOPICS` (so no level finds it cached).
WARM_UP = "a quiet garden"


@dataclass
class LevelResult:
    """What one concurrency level measured."""

    concurrency: int
    requests: int
    output_tokens: int
    wall_s: float
    tokens_per_s: float
    ttft_p50_s: float
    ttft_p95_s: float
    e2e_p50_s: float
    e2e_p95_s: float


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) with linear interpolation."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


async def one_request(
    client: openai.AsyncOpenAI, model: str, prompt: str, max_tokens: int
) -> tuple[float, float, int]:
    """Stream one chat completion; return (ttft, e2e, output tokens)."""
    started = time.perf_counter()
    ttft = None
    tokens = 0
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if ttft is None and chunk.choices and chunk.choices[0].delta.content:
            ttft = time.perf_counter() - started
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    e2e = time.perf_counter() - started
    return (ttft if ttft is not None else e2e), e2e, tokens


async def run_level(
    client: openai.AsyncOpenAI, model: str, concurrency: int, requests: int, max_tokens: int
) -> LevelResult:
    """``requests`` requests, ``concurrency`` at a time (each worker sends its next at once)."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(f"Write a long, detailed story about {TOPICS[i % len(TOPICS)]}.")
    samples: list[tuple[float, float, int]] = []

    async def worker() -> None:
        while not queue.empty():
            prompt = queue.get_nowait()
            samples.append(await one_request(client, model, prompt, max_tokens))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    ttfts = [s[0] for s in samples]
    e2es = [s[1] for s in samples]
    tokens = sum(s[2] for s in samples)
    return LevelResult(
        concurrency=concurrency,
        requests=len(samples),
        output_tokens=tokens,
        wall_s=round(wall, 2),
        tokens_per_s=round(tokens / wall, 2),
        ttft_p50_s=round(statistics.median(ttfts), 3),
        ttft_p95_s=round(percentile(ttfts, 0.95), 3),
        e2e_p50_s=round(statistics.median(e2es), 3),
        e2e_p95_s=round(percentile(e2es, 0.95), 3),
    )


async def benchmark(
    base_url: str, model: str | None, levels: list[int], rounds: int, max_tokens: int
) -> list[LevelResult]:
    """Run every level against ``base_url`` after one warm-up request of the measured
    shape (a long prompt and ``max_tokens``; a topic no level asks for): a server's first
    request of that size paid one-time costs, e.g. llama.cpp's 0.41 s TTFT in its first
    measured request after a short warm-up, on 2026-12-08."""
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", timeout=600)
    if model is None:
        model = (await client.models.list()).data[0].id
    try:
        await one_request(
            client, model, f"Write a long, detailed story about {WARM_UP}.", max_tokens
        )
        results = []
        for level in levels:
            requests = max(level * rounds, 3)
            results.append(await run_level(client, model, level, requests, max_tokens))
            print_table(results[-1:], header=len(results) == 1)
        return results
    finally:
        await client.close()


def print_table(results: list[LevelResult], *, header: bool = True) -> None:
    """Print results as a fixed-width table."""
    if header:
        print(f"{'conc':>4} {'reqs':>4} {'tokens':>6} {'tok/s':>7} {'TTFT p50':>9} "
              f"{'TTFT p95':>9} {'e2e p50':>8} {'e2e p95':>8}")  # fmt: skip
    for r in results:
        print(f"{r.concurrency:>4} {r.requests:>4} {r.output_tokens:>6} {r.tokens_per_s:>7.1f} "
              f"{r.ttft_p50_s:>9.2f} {r.ttft_p95_s:>9.2f} {r.e2e_p50_s:>8.2f} {r.e2e_p95_s:>8.2f}",
              flush=True)  # fmt: skip


def main() -> None:
    """Command line entry point."""
    print(describe_machine(), flush=True)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True, help="server root, without /v1")
    parser.add_argument("--model", default=None, help="default: the first of /v1/models")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=2, help="requests per worker per level")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    args = parser.parse_args()
    results = asyncio.run(
        benchmark(args.base_url, args.model, args.concurrency, args.rounds, args.max_tokens)
    )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
