"""What only a real model shows, on the tiny random Llama through the official openai client.

Seeded sampling, the fast CPU decoder with adapters, continuous batching, runtime LoRA
changing the output, cancellation inside the batcher, the batcher's queue limit, the
tokenizer running off the event loop, int64 seeds and bfloat16. The HTTP and protocol
behaviour around them is tested on the fake engine (test_routers.py, test_protocol.py).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from kaito_inference.app import create_app
from kaito_inference.engines.transformers_engine import TransformersEngine
from kaito_inference.metrics import InferenceMetrics
from kaito_inference.settings import InferenceSettings
from kaito_inference.testing import make_lora_adapter, serve_app, wait_healthy

ADAPTER = "tiny-lora"
CHAT = [{"role": "user", "content": "hello model, tell me about the batch"}]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("adapters-root")
    make_lora_adapter(tiny_model_dir, root / "startup" / ADAPTER, seed=1)
    make_lora_adapter(tiny_model_dir, root / "runtime" / "late", seed=2)
    return root


@pytest.fixture(scope="module")
def server(root: Path, tiny_model_dir: Path) -> Iterator[tuple[str, FastAPI]]:
    settings = InferenceSettings(
        model=str(tiny_model_dir),
        served_model_name="tiny",
        adapters_dir=root / "startup",
        enable_lora_runtime_loading=True,
        lora_root=root / "runtime",
        max_running=8,
    )
    app = create_app(settings)
    with serve_app(app) as url:
        wait_healthy(url, timeout=300)
        yield url, app


@pytest.fixture
def client(server: tuple[str, FastAPI]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key="unused", max_retries=0)


def greedy(client: openai.OpenAI, model: str = "tiny", **kwargs: Any) -> str:
    options: dict[str, Any] = {"max_tokens": 12, "temperature": 0, **kwargs}
    reply = client.chat.completions.create(model=model, messages=CHAT, **options)
    return reply.choices[0].message.content or ""


def test_seed_makes_sampling_reproducible(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        return greedy(client, seed=seed, temperature=1.0, top_p=0.9)

    assert sample(7) == sample(7)
    assert len({sample(s) for s in range(5)}) > 1


def test_fast_cpu_decoder_serves_base_and_adapters(server: tuple[str, FastAPI]) -> None:
    batcher = server[1].state.engine.batcher
    assert hasattr(batcher.model, "peft_config")  # the startup adapter is attached
    assert batcher.fast_decoder is not None
    assert batcher.fast_decoder.applies_to(batcher.model)
    client = openai.OpenAI(base_url=f"{server[0]}/v1", api_key="unused", max_retries=0)
    base_before = greedy(client)
    assert greedy(client, model=ADAPTER) != base_before
    assert greedy(client) == base_before


def test_concurrent_streams_are_batched(server: tuple[str, FastAPI]) -> None:
    url, app = server
    stats = app.state.engine.batcher.stats
    before = sum(n for size, n in stats.decode_batch_sizes.items() if size >= 4)

    async def run_all() -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)

        async def one(i: int) -> str:
            stream = await aclient.chat.completions.create(
                model="tiny" if i % 2 else ADAPTER,
                messages=[{"role": "user", "content": f"request {i}"}],
                max_tokens=24,
                temperature=0,
                stream=True,
            )
            finish = None
            async for chunk in stream:
                finish = chunk.choices[0].finish_reason or finish
            assert finish in {"stop", "length"}
            return finish

        return await asyncio.gather(*(one(i) for i in range(8)))

    assert len(asyncio.run(run_all())) == 8
    assert sum(n for size, n in stats.decode_batch_sizes.items() if size >= 4) > before
    metrics = httpx.get(f"{url}/metrics").text
    for name in ("kaito_inference_batch_size_bucket", "kaito_inference_cpu_threads"):
        assert f"\n{name}" in metrics, name


def test_runtime_lora_changes_only_its_requests_until_unloaded(
    server: tuple[str, FastAPI], root: Path, client: openai.OpenAI
) -> None:
    url = server[0]
    base = greedy(client)
    late = {"lora_name": "late", "lora_path": str(root / "runtime" / "late")}
    loaded = httpx.post(f"{url}/v1/load_lora_adapter", json=late)
    assert loaded.status_code == 200, loaded.text
    assert greedy(client, model="late") != base
    assert greedy(client) == base
    assert httpx.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": "late"}).is_success
    with pytest.raises(openai.NotFoundError):
        greedy(client, model="late")
    assert greedy(client) == base


def test_int64_seed_limits_are_served(client: openai.OpenAI) -> None:
    for seed in (2**63 - 1, -(2**63)):
        reply = client.chat.completions.create(
            model="tiny", messages=CHAT, max_tokens=2, seed=seed, temperature=1.0
        )
        assert reply.choices[0].finish_reason in {"stop", "length"}


def test_client_disconnect_stops_generation(server: tuple[str, FastAPI]) -> None:
    url, app = server
    engine = app.state.engine
    payload = {
        "model": "tiny",
        "messages": CHAT,
        "max_tokens": 900,
        "stream": True,
        "temperature": 0,
    }
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=payload) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
    deadline = time.monotonic() + 10
    while engine.queue_depth() != (0, 0):
        assert time.monotonic() < deadline, "generation kept running after the disconnect"
        time.sleep(0.05)


class PausingMetrics(InferenceMetrics):
    """Metrics whose batch hook can hold the batcher thread inside one decode step."""

    def __init__(self) -> None:
        super().__init__()
        self.pause_next_decode = threading.Event()
        self.paused = threading.Event()
        self.resume = threading.Event()

    def observe_batch(self, phase: str, size: int) -> None:
        super().observe_batch(phase, size)
        if phase == "decode" and self.pause_next_decode.is_set():
            self.pause_next_decode.clear()
            self.paused.set()
            self.resume.wait(30)


def test_the_batchers_full_queue_answers_429(tiny_model_dir: Path) -> None:
    settings = InferenceSettings(
        model=str(tiny_model_dir), adapters_dir=Path("/nonexistent"), max_running=1, max_waiting=0
    )
    metrics = PausingMetrics()
    app = create_app(settings, metrics=metrics)
    with serve_app(app) as url:
        wait_healthy(url, timeout=300)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        model = client.models.list().data[0].id
        long = {"model": model, "messages": CHAT, "max_tokens": 600, "stream": True}
        long["temperature"] = 0  # greedy: its first token is text, so the stream opens
        metrics.pause_next_decode.set()  # the one batch slot stays taken while we ask again
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=long, timeout=60) as first:
            assert first.status_code == 200
            assert metrics.paused.wait(30)
            try:
                with pytest.raises(openai.RateLimitError) as limited:
                    client.chat.completions.create(model=model, messages=CHAT, max_tokens=2)
            finally:
                metrics.resume.set()
        assert limited.value.code == "rate_limit_exceeded"
        text = httpx.get(f"{url}/metrics").text
        assert "kaito_inference_requests_rejected_total 1.0" in text
        reply = client.chat.completions.create(model=model, messages=CHAT, max_tokens=2)
        assert reply.choices[0].finish_reason in {"stop", "length"}  # room again afterwards


def rss_mib() -> float:
    """This process's resident memory (the server runs in it)."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, flags=re.MULTILINE)[1]) / 1024


def test_long_prompt_is_tokenized_off_the_event_loop(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2 MB prompt (about a second of tokenizing, far beyond the context): /health keeps
    answering while the tokenizer runs, and the tokenizer's memory goes back to the OS (it
    stayed allocated: +210 MiB here). Tokenizing on the event loop would let no /health
    answer while it ran; the test looks at that interval only, so a pause of the loop
    elsewhere in the request (a loaded CI machine once held one call for 1 s) is not
    mistaken for it."""
    tokenizing: list[float] = []
    encode_prompt = TransformersEngine.encode_prompt

    def timed_encode_prompt(engine: TransformersEngine, prompt: str) -> list[int]:
        tokenizing.append(time.monotonic())
        try:
            return encode_prompt(engine, prompt)
        finally:
            tokenizing.append(time.monotonic())

    monkeypatch.setattr(TransformersEngine, "encode_prompt", timed_encode_prompt)
    settings = InferenceSettings(model=str(tiny_model_dir), adapters_dir=Path("/nonexistent"))
    prompt = "tokenize me " * (2_000_000 // 12)
    outcome: dict[str, Any] = {}
    with serve_app(create_app(settings)) as base:
        wait_healthy(base, timeout=300)
        model = httpx.get(f"{base}/v1/models").json()["data"][0]["id"]

        def send() -> None:
            payload = {"model": model, "prompt": prompt}
            outcome["response"] = httpx.post(f"{base}/v1/completions", json=payload, timeout=60)

        rss_before = rss_mib()
        sender = threading.Thread(target=send)
        sender.start()
        answered = []
        while sender.is_alive():
            assert httpx.get(f"{base}/health", timeout=30).status_code == 200
            answered.append(time.monotonic())
            time.sleep(0.02)
        sender.join()
        rss_growth = rss_mib() - rss_before
    response = outcome["response"]
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    started, ended = tokenizing
    assert ended - started > 0.1, "the prompt tokenized too fast to tell"
    assert [t for t in answered if started < t < ended], (started, ended, answered)
    assert rss_growth < 100, f"RSS grew by {rss_growth:.0f} MiB"


def test_bfloat16_serves_on_every_cpu(tiny_model_dir: Path, cpu_flags: frozenset[str]) -> None:
    """The counterpart of the fast decoder's bf16 test: the fast path where oneDNN has bf16
    kernels, the transformers forward elsewhere; answers either way."""
    settings = InferenceSettings(
        model=str(tiny_model_dir), adapters_dir=Path("/nonexistent"), dtype="bfloat16"
    )
    app = create_app(settings)
    with serve_app(app) as base:
        wait_healthy(base, timeout=300)
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        model = client.models.list().data[0].id
        reply = client.chat.completions.create(model=model, messages=CHAT, max_tokens=4)
        assert reply.usage is not None
        assert reply.usage.completion_tokens >= 1
        onednn_bf16 = {"avx512bw", "avx512vl", "avx512dq"} <= cpu_flags or (
            "avx_ne_convert" in cpu_flags
        )
        assert (app.state.engine.batcher.fast_decoder is not None) == onednn_bf16
