"""Every endpoint through the official openai client and raw HTTP, on the fake engine.

What these prove is the server's own behaviour (routing, response and stream shapes,
usage, model selection, runtime adapters, 429/503/409, disconnects and metrics); the
fake echoes its prompt, so expected texts are known without a model. What a real model
does is proven in test_server_tiny.py and test_contract.py.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from kaito_inference.app import create_app
from kaito_inference.engines.fake import FakeEngine
from kaito_inference.settings import InferenceSettings
from kaito_inference.testing import serve_app, wait_healthy

CHAT = [{"role": "user", "content": "hello model, tell me about the batch"}]
ADAPTER = "shouty"


def adapter_dir(path: Path) -> Path:
    """A directory that passes the runtime path check (the fake never reads it)."""
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}")
    (path / "adapter_model.safetensors").write_bytes(b"")
    return path


@pytest.fixture(scope="module")
def lora_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lora-root")
    adapter_dir(root / "runtime" / "late")
    adapter_dir(root / "elsewhere" / "outside")
    return root


@pytest.fixture(scope="module")
def served(lora_root: Path) -> Iterator[tuple[str, FakeEngine]]:
    settings = InferenceSettings(
        adapters_dir=Path("/nonexistent"),
        enable_lora_runtime_loading=True,
        lora_root=lora_root / "runtime",
    )
    engine = FakeEngine(model="fake", adapters=[ADAPTER])
    with serve_app(create_app(settings, engine=engine)) as url:
        wait_healthy(url, timeout=30)
        yield url, engine


@pytest.fixture(scope="module")
def slow(lora_root: Path) -> Iterator[tuple[str, FakeEngine]]:
    """A server whose engine takes 50 ms a token, so requests stay in flight."""
    settings = InferenceSettings(
        adapters_dir=Path("/nonexistent"),
        enable_lora_runtime_loading=True,
        lora_root=lora_root / "runtime",
    )
    engine = FakeEngine(model="fake", adapters=[ADAPTER], token_delay_s=0.05)
    with serve_app(create_app(settings, engine=engine)) as url:
        wait_healthy(url, timeout=30)
        yield url, engine


@pytest.fixture
def url(served: tuple[str, FakeEngine]) -> str:
    return served[0]


@pytest.fixture
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def metric(url: str, name: str) -> float:
    """The sum of every sample of ``name`` on ``/metrics``."""
    text = httpx.get(f"{url}/metrics").text
    pattern = rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$"
    return sum(float(value) for value in re.findall(pattern, text, flags=re.MULTILINE))


def test_models_lists_base_then_adapters(client: openai.OpenAI) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == ["fake", ADAPTER]
    assert models[1].model_extra == {"root": f"/fake-adapters/{ADAPTER}", "parent": "fake"}


def test_completion_text_usage_and_finish_reasons(client: openai.OpenAI) -> None:
    whole = client.completions.create(
        model="fake", prompt="one two three", max_tokens=100, temperature=0
    )
    assert whole.object == "text_completion"
    assert whole.id.startswith("cmpl-")
    assert (whole.choices[0].text, whole.choices[0].finish_reason) == ("one two three", "stop")
    assert whole.usage is not None
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (13, 13)
    assert whole.usage.total_tokens == 26
    cut = client.completions.create(
        model="fake", prompt="one two three", max_tokens=5, temperature=0
    )
    assert (cut.choices[0].text, cut.choices[0].finish_reason) == ("one t", "length")
    stopped = client.completions.create(
        model="fake", prompt="one two three", stop=["two"], temperature=0
    )
    assert (stopped.choices[0].text, stopped.choices[0].finish_reason) == ("one ", "stop")


def test_chat_answer_usage_and_ids(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="fake", messages=CHAT, max_tokens=7)
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    choice = reply.choices[0]
    assert (choice.message.role, choice.finish_reason) == ("assistant", "length")
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > len(CHAT[0]["content"])
    assert reply.usage.completion_tokens == 7
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 7
    assert len((choice.message.content or "").encode()) == 7  # the fake's tokens are bytes


@pytest.mark.parametrize("stop", [None, ["batch"]])
def test_chat_stream_equals_the_whole_answer(client: openai.OpenAI, stop: list[str] | None) -> None:
    options: dict[str, Any] = {"model": "fake", "messages": CHAT, "max_tokens": 100, "stop": stop}
    options["temperature"] = 0
    expected = client.chat.completions.create(**options)
    stream = client.chat.completions.create(
        **options, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.id for c in chunks} == {chunks[0].id}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == expected.choices[0].finish_reason == "stop"
    assert all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage == expected.usage


def test_text_stream_is_server_sent_events_ending_with_done(url: str) -> None:
    payload = {"model": "fake", "prompt": "ab cd", "max_tokens": 100, "stream": True}
    payload["temperature"] = 0
    with httpx.stream("POST", f"{url}/v1/completions", json=payload) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert {e["object"] for e in events} == {"text_completion"}
    assert "".join(e["choices"][0]["text"] for e in events) == "ab cd"
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


def test_seeded_sampling_repeats_and_seeds_differ(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        reply = client.completions.create(
            model="fake", prompt="a b c d e f g h", temperature=1.0, seed=seed, max_tokens=50
        )
        return reply.choices[0].text

    assert sample(7) == sample(7)
    assert len({sample(s) for s in range(8)}) > 1


def test_the_model_field_selects_the_adapter(client: openai.OpenAI) -> None:
    def complete(model: str) -> Any:
        return client.completions.create(model=model, prompt="quiet please", temperature=0)

    base, adapted = complete("fake"), complete(ADAPTER)
    assert (base.choices[0].text, adapted.choices[0].text) == ("quiet please", "QUIET PLEASE")
    assert adapted.model == ADAPTER


def test_runtime_adapters_are_checked_loaded_used_and_unloaded(
    url: str, lora_root: Path, client: openai.OpenAI
) -> None:
    load, unload = f"{url}/v1/load_lora_adapter", f"{url}/v1/unload_lora_adapter"
    late = str(lora_root / "runtime" / "late")

    def refused(path: str, body: dict[str, str], status: int) -> dict[str, Any]:
        response = httpx.post(path, json=body)
        assert response.status_code == status, response.text
        error: dict[str, Any] = response.json()["error"]
        return error

    outside = str(lora_root / "elsewhere" / "outside")
    assert refused(load, {"lora_name": "x", "lora_path": outside}, 400)["param"] == "lora_path"
    traversal = str(lora_root / "runtime" / ".." / "elsewhere" / "outside")
    assert refused(load, {"lora_name": "x", "lora_path": traversal}, 400)["param"] == "lora_path"
    empty = lora_root / "runtime" / "empty"
    empty.mkdir(exist_ok=True)
    no_files = refused(load, {"lora_name": "x", "lora_path": str(empty)}, 400)
    assert "adapter_config.json" in no_files["message"]
    assert refused(load, {"lora_name": "../x", "lora_path": late}, 400)["param"] == "lora_name"
    clash = refused(load, {"lora_name": "fake", "lora_path": late}, 400)
    assert clash["code"] == "already_loaded"

    ok = httpx.post(load, json={"lora_name": "late", "lora_path": late})
    assert ok.json() == {"status": "loaded", "lora_name": "late"}
    assert "late" in [m.id for m in client.models.list().data]
    assert (
        client.completions.create(model="late", prompt="hi", max_tokens=5).choices[0].text == "HI"
    )

    assert httpx.post(unload, json={"lora_name": "late"}).json()["status"] == "unloaded"
    assert "late" not in [m.id for m in client.models.list().data]
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="late", prompt="hi", max_tokens=5)
    assert refused(unload, {"lora_name": "late"}, 404)["code"] == "model_not_found"


def test_an_adapter_in_use_cannot_be_unloaded(slow: tuple[str, FakeEngine]) -> None:
    url, engine = slow
    unload = f"{url}/v1/unload_lora_adapter"
    payload = {"model": ADAPTER, "prompt": "x " * 400, "max_tokens": 800, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=payload) as response:
        lines = response.iter_lines()  # kept: a dropped iterator closes the connection
        next(lines)
        busy = httpx.post(unload, json={"lora_name": ADAPTER})
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "adapter_busy"
    assert ADAPTER in [a.name for a in engine.adapters()]


def test_disconnects_stop_generation_streamed_or_not(slow: tuple[str, FakeEngine]) -> None:
    url, engine = slow
    long = {"model": "fake", "prompt": "x " * 400, "max_tokens": 800}
    with httpx.stream("POST", f"{url}/v1/completions", json={**long, "stream": True}) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        assert engine.queue_depth() == (1, 0)
    with pytest.raises(httpx.ReadTimeout):  # gives up long before the 800 tokens are done
        httpx.post(f"{url}/v1/completions", json=long, timeout=0.2)
    deadline = time.monotonic() + 10
    while engine.queue_depth() != (0, 0):
        assert time.monotonic() < deadline, "generation kept running after the disconnect"
        time.sleep(0.05)


def test_streamed_and_whole_requests_are_counted_in_the_metrics(
    url: str, client: openai.OpenAI
) -> None:
    names = (
        "kaito_inference_requests_total",
        "kaito_inference_e2e_request_latency_seconds_count",
        "kaito_inference_time_to_first_token_seconds_count",
        "kaito_inference_generation_tokens_total",
        "kaito_inference_prompt_tokens_total",
    )
    before = {name: metric(url, name) for name in names}
    generated = prompts = 0
    for i in range(4):
        stream = client.chat.completions.create(
            model="fake",
            messages=[{"role": "user", "content": f"count me {i}"}],
            max_tokens=5 + i,
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = [chunk.usage for chunk in stream if chunk.usage is not None][-1]
        generated, prompts = generated + usage.completion_tokens, prompts + usage.prompt_tokens
    whole = client.completions.create(model="fake", prompt="one two", max_tokens=6)
    assert whole.usage is not None
    generated, prompts = generated + whole.usage.completion_tokens, prompts + 7
    after = {name: metric(url, name) - before[name] for name in names}
    assert after == {
        "kaito_inference_requests_total": 5,
        "kaito_inference_e2e_request_latency_seconds_count": 5,
        "kaito_inference_time_to_first_token_seconds_count": 5,
        "kaito_inference_generation_tokens_total": generated,
        "kaito_inference_prompt_tokens_total": prompts,
    }
    assert 'finish_reason="length",model="fake"' in httpx.get(f"{url}/metrics").text


def test_health_is_503_while_loading_then_200() -> None:
    settings = InferenceSettings(adapters_dir=Path("/nonexistent"))
    with serve_app(create_app(settings, engine=FakeEngine(load_delay_s=1.0))) as url:
        loading = httpx.get(f"{url}/health")
        assert loading.status_code == 503
        assert loading.json()["error"]["code"] == "model_not_ready"
        chat = httpx.post(f"{url}/v1/chat/completions", json={"model": "x", "messages": CHAT})
        assert chat.status_code == 503
        assert httpx.get(f"{url}/v1/models").status_code == 503
        assert wait_healthy(url, timeout=30) == [503, 200]


def test_a_failed_load_is_reported_by_health() -> None:
    settings = InferenceSettings(adapters_dir=Path("/nonexistent"))
    engine = FakeEngine(load_failure="no weights in /models")
    with serve_app(create_app(settings, engine=engine)) as url:
        deadline = time.monotonic() + 10
        while engine.load_error is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        health = httpx.get(f"{url}/health")
    assert health.status_code == 503
    assert health.json()["error"]["code"] == "model_load_failed"
    assert "no weights in /models" in health.json()["error"]["message"]
    assert engine.stopped


def test_full_queue_is_429_counted_and_runtime_lora_is_off_by_default() -> None:
    settings = InferenceSettings(adapters_dir=Path("/nonexistent"))
    engine = FakeEngine(model="fake", max_running=1, max_waiting=0, token_delay_s=0.05)
    with serve_app(create_app(settings, engine=engine)) as url:
        wait_healthy(url, timeout=30)
        off = httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": "a", "lora_path": "/x"})
        assert (off.status_code, off.json()["error"]["code"]) == (404, "not_enabled")
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        long = {"model": "fake", "prompt": "x " * 400, "max_tokens": 800, "stream": True}
        with httpx.stream("POST", f"{url}/v1/completions", json=long, timeout=30) as first:
            assert first.status_code == 200
            with pytest.raises(openai.RateLimitError) as limited:
                client.completions.create(model="fake", prompt="x", max_tokens=2)
            stream_refused = httpx.post(f"{url}/v1/completions", json={**long, "max_tokens": 2})
        assert limited.value.code == "rate_limit_exceeded"
        assert stream_refused.status_code == 429  # before any byte of the stream
        assert metric(url, "kaito_inference_requests_rejected_total") == 2
        reply = client.completions.create(model="fake", prompt="x", max_tokens=2)
        assert reply.choices[0].finish_reason == "stop"  # room again afterwards
