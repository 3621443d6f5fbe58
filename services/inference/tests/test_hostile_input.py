"""Inputs that once gave 500s or stalled the server, through the real app on the tiny model.

Lone surrogates and out-of-range seeds are 400s naming the field; oversized bodies are 413
before they are read in full; a long prompt is tokenized off the event loop (``/health``
keeps answering); streamed requests are counted in the metrics like the others; and
``--dtype bfloat16`` serves on every CPU (fast decoder where oneDNN has bf16, else the
transformers forward).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from kaito_inference.app import create_app
from kaito_inference.settings import InferenceSettings
from kaito_inference.testing import serve_app, wait_healthy

BODY_LIMIT = 64 * 1024
CHAT = [{"role": "user", "content": "hello model"}]


@pytest.fixture(scope="module")
def url(tiny_model_dir: Path) -> Iterator[str]:
    settings = InferenceSettings(
        model=str(tiny_model_dir),
        served_model_name="tiny",
        adapters_dir=Path("/nonexistent"),
        max_request_body_bytes=BODY_LIMIT,
    )
    with serve_app(create_app(settings)) as base:
        wait_healthy(base, timeout=120)
        yield base


def post(url: str, path: str, payload: dict[str, Any]) -> httpx.Response:
    """POST ``payload`` as ASCII JSON, so a lone surrogate goes out as ``\\ud800``."""
    headers = {"content-type": "application/json"}
    return httpx.post(f"{url}{path}", content=json.dumps(payload), headers=headers, timeout=60)


def metric(url: str, name: str) -> float:
    """The sum of every sample of ``name`` on ``/metrics``."""
    text = httpx.get(f"{url}/metrics").text
    pattern = rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$"
    return sum(float(value) for value in re.findall(pattern, text, flags=re.MULTILINE))


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "a\ud800b"}]},
            "messages.0.content",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "\udfff"}]}]},
            "messages.0.content",
        ),
        ("/v1/completions", {"prompt": "\ud800"}, "prompt"),
        ("/v1/completions", {"prompt": ["x\udc00"]}, "prompt"),
        ("/v1/completions", {"prompt": "x", "stop": ["\ud800"]}, "stop"),
    ],
)
def test_lone_surrogates_are_400_naming_the_field(
    url: str, path: str, body: dict[str, Any], param: str, stream: bool
) -> None:
    response = post(url, path, {"model": "tiny", "max_tokens": 2, "stream": stream, **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert "surrogate" in error["message"]
    assert error["code"] == "invalid_value"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "x", "stop": 5}, "stop"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": "x", "\ud800": 1}, None),
        ({"model": "\ud800", "prompt": "x"}, "model"),
    ],
)
def test_wrong_types_name_the_field_not_the_union_member(
    url: str, body: dict[str, Any], param: str | None
) -> None:
    response = post(url, "/v1/completions", {"model": "tiny", **body})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_malformed_json_is_400_without_a_param(url: str) -> None:
    headers = {"content-type": "application/json"}
    response = httpx.post(f"{url}/v1/completions", content='{"model": "tiny", ', headers=headers)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_json", None)
    assert error["message"].startswith("the request body is not valid JSON")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize("seed", [2**64, 2**63, -(2**63) - 1])
def test_out_of_range_seed_is_400_naming_seed(url: str, path: str, seed: int) -> None:
    body = {"messages": CHAT} if path.endswith("chat/completions") else {"prompt": "x"}
    response = post(url, path, {"model": "tiny", "max_tokens": 2, "seed": seed, **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "seed"
    assert str(2**63 - 1) in error["message"] or str(-(2**63)) in error["message"]


def test_seed_at_the_int64_limits_is_served(url: str) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    for seed in (2**63 - 1, -(2**63)):
        reply = client.chat.completions.create(
            model="tiny", messages=CHAT, max_tokens=2, seed=seed, temperature=1.0
        )
        assert reply.choices[0].finish_reason in {"stop", "length"}


def test_bodies_over_the_limit_are_413_declared_or_chunked(url: str) -> None:
    prompt = "word " * (BODY_LIMIT // 5 + 10)
    declared = post(url, "/v1/completions", {"model": "tiny", "prompt": prompt})
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "request_too_large"
    assert "KAITO_INFERENCE_MAX_REQUEST_BODY_BYTES" in declared.json()["error"]["message"]

    raw = b'{"model": "tiny", "prompt": "' + prompt.encode() + b'"}'
    pieces = (raw[i : i + 8192] for i in range(0, len(raw), 8192))  # no Content-Length
    chunked = httpx.post(
        f"{url}/v1/completions",
        content=pieces,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert "content-length" not in chunked.request.headers
    assert chunked.status_code == 413
    assert chunked.json()["error"]["code"] == "request_too_large"

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": prompt}], max_tokens=2
        )
    assert refused.value.status_code == 413
    fits = post(url, "/v1/completions", {"model": "tiny", "prompt": "word " * 100, "max_tokens": 2})
    assert fits.status_code == 200, fits.text


def rss_mib() -> float:
    """This process's resident memory (the server runs in it)."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, flags=re.MULTILINE)[1]) / 1024


def test_long_prompt_is_tokenized_off_the_event_loop(tiny_model_dir: Path) -> None:
    """A 2 MB prompt (seconds of tokenizing, far beyond the context): /health stays fast,
    and the tokenizer's memory goes back to the OS (it stayed allocated: +210 MiB here)."""
    settings = InferenceSettings(model=str(tiny_model_dir), adapters_dir=Path("/nonexistent"))
    prompt = "tokenize me " * (2_000_000 // 12)
    outcome: dict[str, Any] = {}
    with serve_app(create_app(settings)) as base:
        wait_healthy(base, timeout=120)
        model = httpx.get(f"{base}/v1/models").json()["data"][0]["id"]

        def send() -> None:
            started = time.monotonic()
            outcome["response"] = post(base, "/v1/completions", {"model": model, "prompt": prompt})
            outcome["seconds"] = time.monotonic() - started

        rss_before = rss_mib()
        sender = threading.Thread(target=send)
        sender.start()
        health_seconds = []
        while sender.is_alive():
            started = time.monotonic()
            assert httpx.get(f"{base}/health", timeout=30).status_code == 200
            health_seconds.append(time.monotonic() - started)
            time.sleep(0.05)
        sender.join()
        rss_growth = rss_mib() - rss_before
    response = outcome["response"]
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    # A blocked loop would hold a /health call for most of the request's time.
    assert max(health_seconds) < outcome["seconds"] / 3, (health_seconds, outcome["seconds"])
    assert rss_growth < 100, f"RSS grew by {rss_growth:.0f} MiB"


def test_streamed_requests_are_counted_in_the_metrics(url: str) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    before = {
        name: metric(url, name)
        for name in (
            "kaito_inference_requests_total",
            "kaito_inference_generation_tokens_total",
            "kaito_inference_e2e_request_latency_seconds_count",
        )
    }
    generated = 0
    for i in range(4):
        stream = client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": f"count me {i}"}],
            max_tokens=5 + i,
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = [chunk.usage for chunk in stream if chunk.usage is not None]
        generated += usage[-1].completion_tokens
    text_stream = client.completions.create(
        model="tiny",
        prompt="one two",
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    generated += [chunk.usage for chunk in text_stream if chunk.usage][-1].completion_tokens
    assert (
        metric(url, "kaito_inference_requests_total") - before["kaito_inference_requests_total"]
        == 5
    )
    assert (
        metric(url, "kaito_inference_e2e_request_latency_seconds_count")
        - before["kaito_inference_e2e_request_latency_seconds_count"]
        == 5
    )
    assert (
        metric(url, "kaito_inference_generation_tokens_total")
        - before["kaito_inference_generation_tokens_total"]
        == generated
    )


def test_bfloat16_serves_on_every_cpu(tiny_model_dir: Path, cpu_flags: frozenset[str]) -> None:
    """The counterpart of the fast decoder's bf16 test: the fast path where oneDNN has bf16
    kernels, the transformers forward elsewhere; answers either way."""
    settings = InferenceSettings(
        model=str(tiny_model_dir), adapters_dir=Path("/nonexistent"), dtype="bfloat16"
    )
    app = create_app(settings)
    with serve_app(app) as base:
        wait_healthy(base, timeout=120)
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        model = client.models.list().data[0].id
        reply = client.chat.completions.create(model=model, messages=CHAT, max_tokens=4)
        assert reply.usage is not None
        assert reply.usage.completion_tokens >= 1
        onednn_bf16 = {"avx512bw", "avx512vl", "avx512dq"} <= cpu_flags or (
            "avx_ne_convert" in cpu_flags
        )
        assert (app.state.engine.batcher.fast_decoder is not None) == onednn_bf16
