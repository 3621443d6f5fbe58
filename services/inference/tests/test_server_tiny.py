"""Fast tests of the whole server on the tiny random model, through the official openai client."""

from __future__ import annotations

import asyncio
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
        wait_healthy(url, timeout=120)
        yield url, app


@pytest.fixture
def client(server: tuple[str, FastAPI]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key="unused", max_retries=0)


def greedy(client: openai.OpenAI, model: str = "tiny", **kwargs: Any) -> str:
    options: dict[str, Any] = {"max_tokens": 12, "temperature": 0, **kwargs}
    reply = client.chat.completions.create(model=model, messages=CHAT, **options)
    return reply.choices[0].message.content or ""


def test_health_is_503_while_loading(tiny_model_dir: Path) -> None:
    settings = InferenceSettings(model=str(tiny_model_dir), adapters_dir=Path("/nonexistent"))
    metrics = InferenceMetrics()
    engine = TransformersEngine(settings, metrics, load_delay=1.5)
    app = create_app(settings, engine=engine, metrics=metrics)
    with serve_app(app) as url:
        loading = httpx.get(f"{url}/health")
        assert loading.status_code == 503
        assert loading.json()["error"]["code"] == "model_not_ready"
        chat = httpx.post(f"{url}/v1/chat/completions", json={"model": "x", "messages": CHAT})
        assert chat.status_code == 503
        assert wait_healthy(url, timeout=60)[-1] == 200


def test_models_lists_base_and_adapters(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list().data]
    assert ids[0] == "tiny"
    assert ADAPTER in ids


def test_chat_usage_and_finish_reason(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=7)
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason in {"stop", "length"}
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 10
    assert 1 <= reply.usage.completion_tokens <= 7
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_stream_equals_non_stream_and_reports_usage(client: openai.OpenAI) -> None:
    expected = greedy(client)
    stream = client.chat.completions.create(
        model="tiny",
        messages=CHAT,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in {"stop", "length"}
    assert all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens >= 1


def test_seed_makes_sampling_reproducible(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        return greedy(client, seed=seed, temperature=1.0, top_p=0.9)

    assert sample(7) == sample(7)
    assert len({sample(s) for s in range(5)}) > 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"n": 2}, "n"),
        ({"temperature": 3}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"logprobs": True}, "logprobs"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"stream_options": {"include_usage": True}}, None),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 100_000}, "max_tokens"),
    ],
)
def test_bad_requests_get_openai_400(
    server: tuple[str, FastAPI], body: dict, param: str | None
) -> None:
    payload = {"model": "tiny", "messages": CHAT, **body}
    response = httpx.post(f"{server[0]}/v1/chat/completions", json=payload)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]


def test_openai_client_sees_typed_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=CHAT)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt=["a", "b"])
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt="x", echo=True)


def test_completions_stream_and_stop(client: openai.OpenAI) -> None:
    full = client.completions.create(
        model="tiny", prompt="one two three", max_tokens=10, temperature=0
    )
    text = full.choices[0].text
    assert full.object == "text_completion"
    assert full.usage is not None
    assert full.usage.completion_tokens >= 1
    streamed = client.completions.create(
        model="tiny", prompt="one two three", max_tokens=10, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == text
    if len(text.strip()) >= 3:  # stop at a piece of the known greedy continuation
        stop = text.strip()[1:3]
        cut = client.completions.create(
            model="tiny", prompt="one two three", max_tokens=10, temperature=0, stop=[stop]
        )
        assert cut.choices[0].finish_reason == "stop"
        assert cut.choices[0].text == text[: text.index(stop)]


def test_adapter_changes_its_output_not_the_base(client: openai.OpenAI) -> None:
    base_before = greedy(client)
    adapted = greedy(client, model=ADAPTER)
    assert adapted != base_before
    assert greedy(client) == base_before


def test_fast_cpu_decoder_serves_base_and_adapters(server: tuple[str, FastAPI]) -> None:
    batcher = server[1].state.engine.batcher
    assert hasattr(batcher.model, "peft_config")  # the startup adapter is attached
    assert batcher.fast_decoder is not None
    assert batcher.fast_decoder.applies_to(batcher.model)


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


def test_runtime_lora_load_and_unload(
    server: tuple[str, FastAPI], root: Path, client: openai.OpenAI
) -> None:
    url = server[0]
    load = f"{url}/v1/load_lora_adapter"
    outside = httpx.post(
        load, json={"lora_name": "x", "lora_path": str(root / "startup" / ADAPTER)}
    )
    assert outside.status_code == 400
    assert outside.json()["error"]["param"] == "lora_path"
    traversal = str(root / "runtime" / ".." / "startup" / ADAPTER)
    assert httpx.post(load, json={"lora_name": "x", "lora_path": traversal}).status_code == 400
    bad_name = httpx.post(
        load, json={"lora_name": "../x", "lora_path": str(root / "runtime" / "late")}
    )
    assert bad_name.status_code == 400
    assert bad_name.json()["error"]["param"] == "lora_name"
    clash = httpx.post(
        load, json={"lora_name": "tiny", "lora_path": str(root / "runtime" / "late")}
    )
    assert clash.status_code == 400

    base = greedy(client)
    ok = httpx.post(load, json={"lora_name": "late", "lora_path": str(root / "runtime" / "late")})
    assert ok.status_code == 200, ok.text
    assert "late" in [m.id for m in client.models.list().data]
    assert greedy(client, model="late") != base
    assert greedy(client) == base

    unload = f"{url}/v1/unload_lora_adapter"
    assert httpx.post(unload, json={"lora_name": "late"}).status_code == 200
    assert "late" not in [m.id for m in client.models.list().data]
    with pytest.raises(openai.NotFoundError):
        greedy(client, model="late")
    missing = httpx.post(unload, json={"lora_name": "late"})
    assert missing.status_code == 404
    assert greedy(client) == base


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


def test_metrics_exposes_documented_names(
    server: tuple[str, FastAPI], client: openai.OpenAI
) -> None:
    greedy(client)
    text = httpx.get(f"{server[0]}/metrics").text
    for name in (
        "kaito_inference_requests_running",
        "kaito_inference_requests_waiting",
        "kaito_inference_requests_total",
        "kaito_inference_requests_rejected_total",
        "kaito_inference_prompt_tokens_total",
        "kaito_inference_generation_tokens_total",
        "kaito_inference_time_to_first_token_seconds_bucket",
        "kaito_inference_e2e_request_latency_seconds_bucket",
        "kaito_inference_batch_size_bucket",
    ):
        assert f"\n{name}" in text, name


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


def test_full_queue_answers_429_and_runtime_lora_is_off_by_default(tiny_model_dir: Path) -> None:
    settings = InferenceSettings(
        model=str(tiny_model_dir), adapters_dir=Path("/nonexistent"), max_running=1, max_waiting=0
    )
    metrics = PausingMetrics()
    app = create_app(settings, metrics=metrics)
    with serve_app(app) as url:
        wait_healthy(url, timeout=60)
        off = httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": "a", "lora_path": "/x"})
        assert off.status_code == 404
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


def test_load_failure_is_reported_by_health(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")  # a model dir with nothing loadable in it
    app = create_app(InferenceSettings(model=str(tmp_path), adapters_dir=Path("/nonexistent")))
    with serve_app(app) as url:
        deadline = time.monotonic() + 60
        while app.state.engine.load_error is None:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        health = httpx.get(f"{url}/health")
        assert health.status_code == 503
        assert health.json()["error"]["code"] == "model_load_failed"
